"""The admin surface: operations on the directory, clients, grants and the
audit log (operations.py), the admin API over them (api.py), and admin tokens
(tokens.py)."""
