"""One module per endpoint. Each exports flows: generators that yield
effects and return a Response (or a value, for helpers shared by flows)."""
