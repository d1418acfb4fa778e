from support import Harness, REDIRECT, ISSUER

def test_smoke():
    h = Harness()
    client, tokens = h.tokens()
    assert tokens["access_token"].startswith("mcp_at_")
    assert tokens["refresh_token"].startswith("mcp_rt_")
