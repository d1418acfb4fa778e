"""The authorization endpoint and the consent step (RFC 6749 §4.1.1,
§4.1.2.1, RFC 9207, MCP security best practices on consent)."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import attrs
import pytest

from mcp_oauth_proxy.core.flows.authorize import MAX_LINK, MAX_STATE
from mcp_oauth_proxy.core.tenant import Policy
from support import ISSUER, REDIRECT, RESOURCE, Harness, params_of, refusal_of, tenant, upstream


def _page(h: Harness, **extra: str):
    client = h.register()
    return client, h.request("GET", h.authorize_url(client["client_id"], **extra))


def test_consent_page_shows_client_redirect_host_and_scopes():
    h = Harness()
    client, page = _page(h, scope="mcp")
    assert page.status == 200
    html = page.body.decode()
    assert "Test Client" in html
    assert '<span class="host">127.0.0.1</span>' in html  # the redirect host alone, shown prominently
    assert "<li>mcp</li>" in html
    assert "openid" in html  # the upstream scopes
    assert 'action="https://acme.example.com/oauth/consent"' in html
    # Anti-framing and no caching on every page.
    assert page.header("x-frame-options") == "DENY"
    assert "frame-ancestors 'none'" in page.header("content-security-policy")
    assert page.header("cache-control") == "no-store"
    # Nothing went upstream and no authorization session exists yet.
    assert h.idp.sent == []
    assert h.store._sessions == {}


def test_consent_page_warns_when_client_only_redirects_to_localhost():
    h = Harness()
    _, page = _page(h)
    assert "localhost" in page.body.decode() and 'class="warn"' in page.body.decode()


def test_browser_cookie_is_host_prefixed_secure_httponly_lax_over_https():
    h = Harness()
    _, page = _page(h)
    cookie = page.header("set-cookie")
    assert cookie.startswith("__Host-mcp_browser=")
    for attr in ("Path=/", "HttpOnly", "SameSite=Lax", "Secure"):
        assert attr in cookie


def test_cookie_has_no_host_prefix_or_secure_over_plain_http_localhost():
    h = Harness(tenant=tenant(issuer="http://localhost:8000", resource="http://localhost:8000/mcp"))
    _, page = _page(h)
    cookie = page.header("set-cookie")
    assert cookie.startswith("mcp_browser=") and "Secure" not in cookie


@pytest.mark.parametrize(
    "query, why",
    [
        ({"client_id": ""}, "no client_id"),
        ({"client_id": "mcp_client_unknown"}, "unknown client"),
        ({"redirect_uri": "https://evil.example/cb"}, "unregistered redirect"),
        ({"redirect_uri": "http://127.0.0.1:33418/other"}, "other path on loopback"),
    ],
)
def test_bad_client_or_redirect_gets_an_html_page_and_never_a_redirect(query, why):
    h = Harness()
    client = h.register()
    extra = {k: v for k, v in query.items() if k != "client_id"}
    response = h.request("GET", h.authorize_url(query.get("client_id", client["client_id"]), **extra))
    assert response.status == 400, why
    assert response.header("location") is None
    assert response.header("content-type").startswith("text/html")
    assert response.header("x-frame-options") == "DENY"


def test_duplicate_parameter_before_client_is_known_is_an_html_page():
    h = Harness()
    client = h.register()
    url = h.authorize_url(client["client_id"]) + "&client_id=" + client["client_id"]
    response = h.request("GET", url)
    assert response.status == 400 and response.header("location") is None


def test_loopback_redirect_may_use_any_port():
    h = Harness()
    client = h.register()
    response = h.request("GET", h.authorize_url(client["client_id"], redirect_uri="http://127.0.0.1:5555/callback"))
    assert response.status == 200


def test_redirect_uri_may_be_omitted_when_exactly_one_is_registered():
    h = Harness()
    client = h.register()
    response = h.request("GET", h.authorize_url(client["client_id"], redirect_uri=None))
    assert response.status == 200


@pytest.mark.parametrize(
    "extra, error",
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"scope": "admin"}, "invalid_scope"),
        ({"scope": "mcp  mcp"}, "invalid_scope"),
        ({"resource": "https://other.example.com/mcp"}, "invalid_target"),
        ({"resource": "https://acme.example.com/other"}, "invalid_target"),
    ],
)
def test_errors_after_the_redirect_is_verified_go_back_with_state_and_iss(extra, error):
    h = Harness()
    client = h.register()
    h.login(client["client_id"])  # approved in this browser: its redirect URI is trusted
    response = h.request("GET", h.authorize_url(client["client_id"], **extra))
    assert response.status == 302
    location = response.header("location")
    assert location.startswith(REDIRECT + "?")
    params = params_of(location)
    assert params["error"] == error
    assert params["state"] == "client-state"
    assert params["iss"] == ISSUER  # RFC 9207 §2


@pytest.mark.parametrize("extra", [{"response_type": "token"}, {"code_challenge": None}, {"scope": "admin"}])
def test_an_error_for_a_redirect_uri_not_yet_trusted_is_a_page_with_a_link_to_it(extra):
    # RFC 9700 §4.11.2: the authorization server "MUST only automatically
    # redirect the user agent if it trusts the redirection URI". Anyone may
    # register one (a review bounced browsers to https://attacker.example
    # through a made-up error, nothing shown); a person who approved the
    # client in this browser trusts it.
    h = Harness()
    client, response = _page(h, **extra)
    assert response.status == 400 and response.header("location") is None
    assert response.header("content-type").startswith("text/html")
    html = response.body.decode()
    back = re.search(r'<a href="([^"]+)"', html)
    assert back is not None
    target = unescape(back.group(1))
    assert target.startswith(REDIRECT + "?")
    params = params_of(target)
    assert params["error"] and params["state"] == "client-state" and params["iss"] == ISSUER
    assert "127.0.0.1" in html  # where the link goes, said


def test_an_approval_for_another_redirect_host_does_not_make_this_one_trusted():
    h = Harness()
    client = h.register(redirect_uris=[REDIRECT, "https://app.example.com/cb"])
    h.login(client["client_id"])
    response = h.request("GET", h.authorize_url(client["client_id"], redirect_uri="https://app.example.com/cb",
                                                 response_type="token"))
    assert response.status == 400 and response.header("location") is None


@pytest.mark.parametrize("resource", ["HTTPS://ACME.EXAMPLE.COM/mcp", RESOURCE + "/", None])
def test_resource_forms_that_name_our_resource_are_accepted(resource):
    h = Harness()
    _, page = _page(h, resource=resource)
    assert page.status == 200


def test_scope_is_limited_to_what_the_client_registered():
    h = Harness()
    client = h.register(scope="mcp")
    response = h.request("GET", h.authorize_url(client["client_id"], scope="mcp:admin"))
    assert refusal_of(response)["error"] == "invalid_scope"


def _approve(h: Harness, page) -> object:
    return h.request("POST", f"{ISSUER}/oauth/consent",
                     form={"request_id": h.consent_request_id(page), "decision": "approve"})


def test_approve_redirects_upstream_with_303_state_pkce_and_nonce():
    h = Harness()
    client, page = _page(h)
    response = _approve(h, page)
    assert response.status == 303  # never 307 after a form POST
    location = response.header("location")
    assert location.startswith("https://idp.example.org/authorize?")
    up = params_of(location)
    assert up["client_id"] == "upstream-client"
    assert up["redirect_uri"] == f"{ISSUER}/oauth/callback"
    assert up["code_challenge_method"] == "S256" and len(up["code_challenge"]) == 43
    assert len(up["state"]) >= 43 and up["nonce"]
    assert up["scope"] == "openid profile email"
    # The state is stored only as a hash, the verifier only encrypted.
    dump = h.store.dump()
    assert up["state"] not in dump
    # The browser now remembers the approval, signed and bound to the tenant.
    cookie = [v for n, v in response.headers if n == "set-cookie"][0]
    assert cookie.startswith("__Host-mcp_consent_acme=") and "HttpOnly" in cookie and "Secure" in cookie


# A client whose identity is assured (it proves itself at the token endpoint),
# so that a remembered approval may skip the page (RFC 8252 §8.6).
ASSURED = {"token_endpoint_auth_method": "client_secret_post"}


def test_a_remembered_client_skips_consent_for_this_tenant_only():
    h = Harness()
    client = h.register(**ASSURED)
    page = h.request("GET", h.authorize_url(client["client_id"]))
    _approve(h, page)
    again = h.request("GET", h.authorize_url(client["client_id"]))
    assert again.status == 302 and again.header("location").startswith("https://idp.example.org/")
    # Another client still needs consent.
    other = h.register()
    assert h.request("GET", h.authorize_url(other["client_id"])).status == 200
    # The same cookie presented to another tenant (same host, other slug) is ignored.
    t2 = attrs.evolve(h.tenant, slug="globex")
    h2 = Harness(tenant=t2, store=h.store, cookies=dict(h.cookies))
    client2 = h2.register()
    h2.cookies = dict(h.cookies)
    assert h2.request("GET", h2.authorize_url(client2["client_id"])).status == 200


def test_an_approval_is_remembered_for_the_destination_the_page_named_only():
    """Approved for 127.0.0.1, a request that sends the code to another
    registered host (never shown to the person) gets the page again."""
    h = Harness()
    client = h.register(redirect_uris=[REDIRECT, "https://evil.example/cb"], application_type="web", **ASSURED)
    page = h.request("GET", h.authorize_url(client["client_id"]))
    assert "evil.example" not in page.body.decode()
    _approve(h, page)
    elsewhere = h.request("GET", h.authorize_url(client["client_id"], redirect_uri="https://evil.example/cb"))
    assert elsewhere.status == 200 and '<span class="host">evil.example</span>' in elsewhere.body.decode()
    assert h.request("GET", h.authorize_url(client["client_id"])).status == 302
    # Another port of a registered host is another site: the page again, naming it.
    client2 = h.register(redirect_uris=["https://app.example/cb", "https://app.example:8443/cb"],
                         application_type="web")
    _approve(h, h.request("GET", h.authorize_url(client2["client_id"], redirect_uri="https://app.example/cb")))
    other_site = h.request("GET", h.authorize_url(client2["client_id"], redirect_uri="https://app.example:8443/cb"))
    assert other_site.status == 200 and '<span class="host">app.example:8443</span>' in other_site.body.decode()
    # A native app's loopback port changes from run to run: the same destination (RFC 8252 §7.3).
    other_port = h.request("GET", h.authorize_url(client["client_id"], redirect_uri="http://127.0.0.1:5555/callback"))
    assert other_port.status == 302


def test_an_approval_is_remembered_for_the_scopes_approved_only():
    h = Harness()
    client = h.register(**ASSURED)
    page = h.request("GET", h.authorize_url(client["client_id"], scope="mcp"))
    _approve(h, page)
    assert h.request("GET", h.authorize_url(client["client_id"], scope="mcp")).status == 302
    wider = h.request("GET", h.authorize_url(client["client_id"], scope="mcp mcp:admin"))
    assert wider.status == 200 and "<li>mcp:admin</li>" in wider.body.decode()
    _approve(h, wider)
    # Both approvals stand: the narrower one is not forgotten.
    for scope in ("mcp", "mcp:admin", "mcp mcp:admin"):
        assert h.request("GET", h.authorize_url(client["client_id"], scope=scope)).status == 302, scope


def test_remembered_approvals_fit_in_a_cookie():
    h = Harness()
    long_name = "https://app.example/" + "x" * 200 + "/cb"
    for _ in range(30):
        client = h.register(redirect_uris=[long_name], application_type="web")
        _approve(h, h.request("GET", h.authorize_url(client["client_id"], redirect_uri=long_name)))
        assert len(h.cookies["__Host-mcp_consent_acme"]) < 4000
    # The newest is remembered.
    assert h.request("GET", h.authorize_url(client["client_id"], redirect_uri=long_name)).status == 302


def test_tampered_consent_cookie_is_ignored():
    h = Harness()
    client, page = _page(h)
    _approve(h, page)
    value = h.cookies["__Host-mcp_consent_acme"]
    h.cookies["__Host-mcp_consent_acme"] = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    assert h.request("GET", h.authorize_url(client["client_id"])).status == 200


def test_expired_consent_cookie_is_ignored():
    # The client's registration must outlive the cookie for this to test the cookie.
    h = Harness(tenant=tenant(policy=Policy(unused_client_ttl=10**9)))
    client, page = _page(h)
    _approve(h, page)
    h.now += h.tenant.policy.consent_ttl + 1
    assert h.request("GET", h.authorize_url(client["client_id"])).status == 200


def test_deny_returns_access_denied_to_the_client_with_iss():
    h = Harness()
    client, page = _page(h)
    response = h.request("POST", f"{ISSUER}/oauth/consent",
                         form={"request_id": h.consent_request_id(page), "decision": "deny"})
    assert response.status == 303
    params = params_of(response.header("location"))
    assert params == {"error": "access_denied", "error_description": "the person denied the request",
                      "state": "client-state", "iss": ISSUER}
    assert h.idp.sent == []


def test_consent_post_without_the_browser_cookie_is_refused():
    """CSRF: a form posted from another browser (no cookie) is refused."""
    h = Harness()
    client, page = _page(h)
    request_id = h.consent_request_id(page)
    h.cookies.clear()
    response = h.request("POST", f"{ISSUER}/oauth/consent", form={"request_id": request_id, "decision": "approve"})
    assert response.status == 403 and response.header("location") is None


def test_consent_post_with_another_browsers_cookie_is_refused():
    h = Harness()
    client, page = _page(h)
    request_id = h.consent_request_id(page)
    h.cookies["__Host-mcp_browser"] = "x" * 43
    response = h.request("POST", f"{ISSUER}/oauth/consent", form={"request_id": request_id, "decision": "approve"})
    assert response.status == 403


@pytest.mark.parametrize(("origin", "status"), [("https://evil.example", 403), ("https://acme.example.com.evil", 403),
                                                 ("null", 303), ("https://ACME.example.com", 303), (None, 303)])
def test_a_consent_post_from_another_site_is_refused_by_its_origin(origin, status):
    h = Harness()
    client, page = _page(h)
    headers = [("origin", origin)] if origin else []
    response = h.request("POST", f"{ISSUER}/oauth/consent", form={"request_id": h.consent_request_id(page),
                                                                  "decision": "approve"}, headers=headers)
    assert response.status == status
    assert (response.header("location") is None) == (status == 403)


def test_consent_is_answered_once_and_expires():
    h = Harness()
    client, page = _page(h)
    request_id = h.consent_request_id(page)
    assert h.request("POST", f"{ISSUER}/oauth/consent", form={"request_id": request_id, "decision": "approve"}).status == 303
    again = h.request("POST", f"{ISSUER}/oauth/consent", form={"request_id": request_id, "decision": "approve"})
    assert again.status == 400 and "expired" in again.body.decode()
    _, page2 = _page(h)
    h.now += h.tenant.policy.session_ttl
    late = h.request("POST", f"{ISSUER}/oauth/consent", form={"request_id": h.consent_request_id(page2), "decision": "approve"})
    assert late.status == 400


@pytest.mark.parametrize("form", [{}, {"request_id": "x"}, {"request_id": "x", "decision": "maybe"}])
def test_incomplete_consent_form_is_an_html_error(form):
    h = Harness()
    response = h.request("POST", f"{ISSUER}/oauth/consent", form=form)
    assert response.status == 400 and response.header("content-type").startswith("text/html")


def test_client_name_is_escaped_on_the_consent_page():
    h = Harness()
    client = h.register(client_name='<script>alert(1)</script>"')
    page = h.request("GET", h.authorize_url(client["client_id"]))
    html = page.body.decode()
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in html


def test_authorize_by_post_form_is_supported_as_the_same_get():
    # A POST from the client's own site arrives without the person's
    # SameSite=Lax cookies: answered there, it set a new browser cookie over
    # theirs, ending the logins under way in their other tabs (a review, by
    # a cross-site form). The GET it is sent on to carries them.
    h = Harness()
    client = h.register()
    query = urlsplit(h.authorize_url(client["client_id"])).query
    h.request("GET", h.authorize_url(client["client_id"]))
    browser = dict(h.cookies)
    h.cookies = {}  # the cross-site POST carries none
    response = h.request("POST", f"{ISSUER}/oauth/authorize", form=dict(parse_qsl(query)))
    assert response.status == 303 and response.header("set-cookie") is None
    location = response.header("location")
    assert location.startswith(f"{ISSUER}/oauth/authorize?")
    assert sorted(parse_qsl(urlsplit(location).query)) == sorted(parse_qsl(query))
    h.cookies = browser
    page = h.request("GET", location)
    assert page.status == 200 and h.cookies == browser  # the same browser value, kept


def test_oauth2_upstream_without_oidc_gets_no_nonce():
    h = Harness(tenant=tenant(upstream=upstream(oidc=False)))
    client, page = _page(h)
    up = params_of(_approve(h, page).header("location"))
    assert "nonce" not in up and up["scope"] == "read:user"


def test_tenants_sharing_a_host_remember_their_approvals_apart():
    base = "https://shared.example.com"
    first = Harness(tenant=tenant(slug="first", issuer=f"{base}/first", resource=f"{base}/first/mcp"))
    second = Harness(tenant=tenant(slug="second", issuer=f"{base}/second", resource=f"{base}/second/mcp"),
                     cookies=first.cookies)  # one browser
    one, two = first.register(**ASSURED), second.register(**ASSURED)
    first.login(one["client_id"])
    second.login(two["client_id"])
    # Approving on the second did not undo the first's remembered approval.
    for h, client in ((first, one), (second, two)):
        assert h.request("GET", h.authorize_url(client["client_id"])).status == 302


def test_a_presets_extra_parameters_go_to_the_upstream_with_ours_untouched():
    # Google's (upstream/providers.py GOOGLE_OFFLINE): a refresh token at every sign-in.
    h = Harness(tenant=tenant(upstream=upstream(extra_authorize_params=(("access_type", "offline"),
                                                                       ("prompt", "consent")))))
    client = h.register()
    page = h.request("GET", h.authorize_url(client["client_id"]))
    sent = h.request("POST", f"{ISSUER}/oauth/consent",
                     form={"request_id": h.consent_request_id(page), "decision": "approve"})
    params = params_of(sent.header("location") or "")
    assert params["access_type"] == "offline" and params["prompt"] == "consent"
    assert params["client_id"] == "upstream-client" and params["code_challenge_method"] == "S256"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_state_too_long_to_keep_is_refused_with_a_page_and_nothing_stored(method):
    # A review: each authorization request is kept for the session's lifetime
    # with its state, and the state had no bound: 60 requests of 1 MB each,
    # no sign-in needed, grew the database by 59 MB.
    h = Harness()
    client = h.register()
    url = h.authorize_url(client["client_id"], state="s" * (MAX_STATE + 1))
    if method == "GET":
        response = h.request("GET", url)
    else:
        path, _, query = url.partition("?")
        response = h.request("POST", path, form=dict(parse_qsl(query)))
    assert response.status == 400 and response.header("location") is None
    assert response.header("content-type").startswith("text/html")
    assert "state" in response.body.decode()
    assert h.store._consents == {} and h.store._sessions == {}
    # The longest state kept is kept whole, and comes back as it went.
    page = h.request("GET", h.authorize_url(client["client_id"], state="s" * MAX_STATE))
    assert page.status == 200
    assert h.login(client["client_id"], state="s" * MAX_STATE)["state"] == "s" * MAX_STATE


def test_a_client_stored_with_a_blank_name_is_shown_by_its_id():
    # Registered before blank names were refused.
    h = Harness()
    client = h.register()
    stored = h.store.get_client("acme", client["client_id"])
    h.store.save_client(attrs.evolve(stored, client_name=" \u2800 "))
    page = h.request("GET", h.authorize_url(client["client_id"]))
    assert page.status == 200 and f"Allow {client['client_id']}" in page.body.decode().replace("<h1>", "")


@pytest.mark.parametrize("redirect", ["http://127.0.0.1:44444/callback", "com.example.app:/callback"])
def test_a_remembered_approval_does_not_send_a_public_native_clients_code_unasked(redirect):
    # RFC 8252 §8.6: "authorization servers SHOULD NOT process authorization
    # requests automatically without user consent or interaction, except when
    # the identity of the client can be assured", even when the person
    # approved the client before. A review: a program listening on another
    # loopback port, with the client's public id and its own PKCE challenge,
    # got a code from a browser that had approved the real client once.
    h = Harness()
    client = h.register(redirect_uris=[REDIRECT, redirect])
    h.login(client["client_id"])
    for uri in (REDIRECT, redirect):
        again = h.request("GET", h.authorize_url(client["client_id"], redirect_uri=uri))
        assert again.status == 200 and "Allow" in again.body.decode()


def test_a_remembered_approval_still_skips_the_page_where_the_client_is_assured():
    # An https redirect URI on a host of the web: only that host gets the code.
    h = Harness()
    web = h.register(redirect_uris=["https://app.example.com/cb"], application_type="web")
    h.login(web["client_id"], redirect_uri="https://app.example.com/cb")
    assert h.request("GET", h.authorize_url(web["client_id"], redirect_uri="https://app.example.com/cb")).status == 302
    # A client that proves itself at the token endpoint: a code is no use to another.
    secret = h.register(token_endpoint_auth_method="client_secret_basic")
    h.login(secret["client_id"])
    assert h.request("GET", h.authorize_url(secret["client_id"])).status == 302


def test_a_posted_request_too_long_for_a_link_is_a_page():
    # A review: a 1 MB POST became a 1 MB Location header (which the
    # server's own 16 KB head limit then refused as a GET).
    h = Harness()
    client = h.register()
    query = dict(parse_qsl(urlsplit(h.authorize_url(client["client_id"])).query))
    response = h.request("POST", f"{ISSUER}/oauth/authorize", form={**query, "extra": "x" * MAX_LINK})
    assert response.status == 400 and response.header("location") is None
    assert response.header("content-type").startswith("text/html")


@pytest.mark.parametrize("redirect", ["https://localhost./cb", "https://app.localhost/cb",
                                      "https://[::ffff:127.0.0.1]/cb", "https://0.0.0.0/cb", "https://[::]/cb",
                                      "https://127.1.2.3/cb", "https://LOCALHOST/cb",
                                      # A third review: names hosts files give loopback, "this network".
                                      "https://localhost.localdomain/cb", "https://ip6-localhost/cb",
                                      "https://0.1.2.3/cb", "https://[::ffff:0.0.0.1]/cb"])
def test_an_https_redirect_to_this_machine_assures_no_public_client(redirect):
    # A second review: hosts that reach this machine, not spelled as loopback.
    h = Harness()
    client = h.register(redirect_uris=[redirect], application_type="web")
    h.login(client["client_id"], redirect_uri=redirect)
    again = h.request("GET", h.authorize_url(client["client_id"], redirect_uri=redirect))
    assert again.status == 200, redirect
