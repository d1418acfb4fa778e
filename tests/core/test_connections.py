"""The connections page: a person signs in through the tenant's upstream,
sees their own grants and revokes them. The attacks first: a sign-in
finished by another browser (login CSRF), forms without the session's
token or from another site, another person's grant, a tampered cookie."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import pytest
from support import ISSUER, REDIRECT, UPSTREAM_ISSUER, DocHarness, Harness, hidden_value, params_of, tenant
from support import document as _doc

from mcp_oauth_proxy.core.connections_session import SESSION_TTL
from mcp_oauth_proxy.core.cookies import CLOCK_SKEW
from mcp_oauth_proxy.core.flows.connections import PAGE_SIZE
from mcp_oauth_proxy.core.http import Response
from mcp_oauth_proxy.core.models import ConnectionsSignIn, Principal, Revocation
from mcp_oauth_proxy.core.tenant import Policy

PAGE = f"{ISSUER}/oauth/connections"
COOKIE = "__Host-mcp_connections_acme"


def _connected(h: Harness, **client_meta: str) -> tuple[dict, dict]:
    """A client that got tokens through this person's login."""
    return h.tokens(**client_meta)


def _grant_id(h: Harness, access_token: str) -> str:
    principal = h.guard(access_token)
    assert isinstance(principal, Principal), principal
    return principal.grant_id


def _post(h: Harness, form: dict[str, str], origin: str | None = None) -> Response:
    return h.request("POST", PAGE, form=form, headers=[("origin", origin)] if origin else [])


def _disconnect(h: Harness, page: Response, grant_id: str, **over: str) -> Response:
    form = {"form_token": hidden_value(page, "form_token"), "grant_id": grant_id, "action": "disconnect"}
    form.update(over)
    return _post(h, {k: v for k, v in form.items() if v})


def _upstream_state(h: Harness) -> str:
    start = h.request("GET", PAGE)
    assert start.status == 302
    up = params_of(start.header("location"))
    h.idp.nonce = up.get("nonce")
    return up["state"]


def _callback(h: Harness, state: str) -> Response:
    return h.request("GET", f"{ISSUER}/oauth/callback?" + urlencode(
        {"code": "upstream-code", "state": state, "iss": UPSTREAM_ISSUER}))


def _audits(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    return [r.audit for r in caplog.records if getattr(r, "audit", {}).get("event") == event]


# -- signing in ------------------------------------------------------------------


def test_signing_in_is_the_tenants_upstream_login_bound_to_this_browser():
    h = Harness()
    start = h.request("GET", PAGE)
    assert start.status == 302
    location = start.header("location")
    assert location.startswith(f"{UPSTREAM_ISSUER}/authorize?")
    up = params_of(location)
    # The same upstream request a client's authorization makes: our PKCE,
    # a fresh state, an OIDC nonce, our callback.
    assert up["redirect_uri"] == f"{ISSUER}/oauth/callback" and up["code_challenge_method"] == "S256"
    assert len(up["state"]) >= 43 and up["nonce"] and up["client_id"] == "upstream-client"
    assert "__Host-mcp_browser" in h.cookies
    ((session, _),) = h.store._sessions.values()
    assert session.request == ConnectionsSignIn()


def test_the_callback_signs_the_person_in_with_a_short_lived_cookie_and_makes_no_grant(caplog):
    caplog.set_level(logging.INFO, logger="mcp_oauth_proxy.audit")
    h = Harness()
    back = _callback(h, _upstream_state(h))
    assert back.status == 303 and back.header("location") == PAGE
    cookie = back.header("set-cookie")
    assert cookie.startswith(f"{COOKIE}=")
    for part in ("Path=/", "HttpOnly", "SameSite=Lax", "Secure", f"Max-Age={SESSION_TTL}"):
        assert part in cookie.split("; ")
    # Who the person is, learnt as for a client: the code exchanged, the id_token checked.
    assert [r.url for r in h.idp.sent] == [f"{UPSTREAM_ISSUER}/token", f"{UPSTREAM_ISSUER}/userinfo"]
    assert h.store._grants == {} and h.store._codes == {}
    assert "upstream-at-1" not in h.store.dump()
    assert _audits(caplog, "connections_signed_in") == [
        {"event": "connections_signed_in", "tenant": "acme", "client_id": None, "user_id": "user-42"}]


def test_a_sign_in_finished_by_another_browser_is_refused_and_spent():
    """Login CSRF: the attacker starts a sign-in and lures the victim's
    browser to the callback with the attacker's state. The victim must not
    end up signed in (as anyone), and the state is spent."""
    attacker, victim = Harness(), Harness(seed=10_000)
    victim.store = attacker.store
    state = _upstream_state(attacker)
    refused = _callback(victim, state)
    assert refused.status == 403 and "another browser" in refused.body.decode()
    assert refused.header("set-cookie") is None and COOKIE not in victim.cookies
    assert victim.idp.sent == []  # the upstream code was never exchanged
    assert _callback(attacker, state).status == 400  # spent


def test_a_forged_or_replayed_state_signs_nobody_in():
    h = Harness()
    state = _upstream_state(h)
    assert _callback(h, "forged-" + state).status == 400
    assert _callback(h, state).status == 303
    h.cookies.pop(COOKIE)
    replayed = _callback(h, state)
    assert replayed.status == 400 and COOKIE not in h.cookies


def test_a_refusal_at_the_identity_provider_is_a_page():
    h = Harness()
    state = _upstream_state(h)
    page = h.request("GET", f"{ISSUER}/oauth/callback?" + urlencode(
        {"error": "access_denied", "state": state, "iss": UPSTREAM_ISSUER}))
    assert page.status == 403 and page.header("content-type").startswith("text/html")
    assert page.header("location") is None and COOKIE not in h.cookies


def test_a_sign_in_lasts_minutes_then_the_page_signs_in_again():
    h = Harness()
    assert h.sign_in_to_connections().status == 200
    h.now += SESSION_TTL - 1
    assert h.request("GET", PAGE).status == 200
    h.now += 1
    assert h.request("GET", PAGE).status == 302


@pytest.mark.parametrize("tamper", ["flip", "consent value", "other tenant", "junk"])
def test_a_cookie_that_is_not_this_pages_signs_nobody_in(tamper):
    h = Harness()
    h.sign_in_to_connections()
    if tamper == "flip":
        body, _, signature = h.cookies[COOKIE].partition(".")
        h.cookies[COOKIE] = body + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    elif tamper == "consent value":
        # A consent cookie is signed with the same key, for another purpose.
        h.login(h.register()["client_id"])
        h.cookies[COOKIE] = h.cookies["__Host-mcp_consent_acme"]
    elif tamper == "other tenant":
        other = Harness(tenant=tenant(slug="globex"), seed=10_000)
        other.sign_in_to_connections()
        h.cookies[COOKIE] = other.cookies["__Host-mcp_connections_globex"]
    else:
        h.cookies[COOKIE] = "e30.x"
    assert h.request("GET", PAGE).status == 302


# -- the list ------------------------------------------------------------------------


def test_the_page_lists_the_persons_grants_with_what_each_may_do():
    h = Harness()
    client, tokens = _connected(h, redirect_uris=[REDIRECT, "https://app.example.com/cb",
                                                  "https://app.example.com/other"])
    page = h.sign_in_to_connections()
    assert page.status == 200
    html = page.body.decode()
    assert "<h2>Test Client</h2>" in html
    # Each host it may send the person to, once.
    assert '<dd><span class="host">127.0.0.1</span>, <span class="host">app.example.com</span></dd>' in html
    assert "mcp, mcp:admin" in html
    assert "2027-01-15 08:00 UTC" in html  # NOW, when the grant was made
    assert "<dt>Last used</dt><dd>2027-01-15 08:00 UTC</dd>" in html  # its tokens were issued then too
    assert client["client_id"] in html and 'class="host">user-42<' in html
    assert hidden_value(page, "grant_id") == _grant_id(h, tokens["access_token"])
    assert 'aria-label="Disconnect Test Client"' in html
    # Served as every page of ours: no script, no framing, no caching, no referrer.
    assert "<script" not in html
    assert page.header("content-security-policy").startswith("default-src 'none'")
    assert "frame-ancestors 'none'" in page.header("content-security-policy")
    assert page.header("x-frame-options") == "DENY" and page.header("referrer-policy") == "no-referrer"
    assert page.header("cache-control") == "no-store"
    assert '<meta name="viewport"' in html


def test_each_person_sees_only_their_own_grants():
    ada, bob = Harness(), Harness(seed=10_000)
    bob.store, bob.idp.sub = ada.store, "user-7"
    ada_client, _ = _connected(ada, client_name="Ada's app")
    bob_client, _ = _connected(bob, client_name="Bob's app")
    ada_page = ada.sign_in_to_connections().body.decode()
    bob_page = bob.sign_in_to_connections().body.decode()
    assert "Ada&#x27;s app" in ada_page and "Bob&#x27;s app" not in ada_page
    assert "Bob&#x27;s app" in bob_page and "Ada&#x27;s app" not in bob_page


def test_a_person_with_no_grant_is_told_so():
    html = Harness().sign_in_to_connections().body.decode()
    assert "You have not connected any application." in html and 'value="disconnect"' not in html


def test_an_injected_client_name_is_shown_as_text():
    h = Harness()
    _connected(h, client_name='<script>alert(1)</script>"><img src=x onerror=alert(2)>')
    html = h.sign_in_to_connections().body.decode()
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in html


def test_a_client_of_a_metadata_document_is_named_by_its_host_without_fetching_it():
    h = DocHarness()
    h.serve(_doc())
    params = h.login("https://app.example.net/oauth/client.json")
    assert h.redeem("https://app.example.net/oauth/client.json", params["code"]).status == 200
    fetched = len(h.fetched)
    html = h.sign_in_to_connections().body.decode()
    assert len(h.fetched) == fetched
    assert 'described by <span class="host">app.example.net</span>' in html


def test_many_grants_are_listed_a_page_at_a_time():
    h = Harness()
    client = h.register()
    for _ in range(PAGE_SIZE + 2):
        h.login(client["client_id"])
    first = h.sign_in_to_connections()
    assert first.body.decode().count('value="disconnect"') == PAGE_SIZE
    more = link_to(first, "More connections")
    second = h.request("GET", more)
    assert second.body.decode().count('value="disconnect"') == 2
    assert "More connections" not in second.body.decode()


def link_to(page: Response, text: str) -> str:
    html = page.body.decode()
    end = html.index(f'">{text}</a>')
    return html[html.rindex('href="', 0, end) + 6:end].replace("&amp;", "&")


def test_the_consent_page_links_to_the_connections_page():
    h = Harness()
    page = h.request("GET", h.authorize_url(h.register()["client_id"]))
    assert f'<a href="{PAGE}">your connections</a>' in page.body.decode()


def test_a_tenant_under_an_issuer_path_serves_its_page_there():
    base = "https://auth.example.com"
    h = Harness(tenant=tenant(slug="beta", issuer=f"{base}/beta", resource=f"{base}/beta/mcp"))
    _connected(h)
    page = h.sign_in_to_connections()  # checks the callback's redirect to /beta/oauth/connections
    assert page.status == 200 and "<h2>Test Client</h2>" in page.body.decode()
    assert f'action="{base}/beta/oauth/connections"' in page.body.decode()
    assert h.request("GET", f"{base}/oauth/connections").status == 404  # not the tenant's place


# -- disconnecting -------------------------------------------------------------------


def test_disconnect_revokes_the_grant_and_the_guard_refuses_its_tokens(caplog):
    caplog.set_level(logging.INFO, logger="mcp_oauth_proxy.audit")
    h = Harness()
    client, tokens = _connected(h)
    grant_id = _grant_id(h, tokens["access_token"])
    page = h.sign_in_to_connections()
    done = _disconnect(h, page, grant_id)
    assert done.status == 303 and done.header("location") == PAGE + "?disconnected=1"
    refused = h.guard(tokens["access_token"])
    assert isinstance(refused, Response) and refused.status == 401
    assert 'error="invalid_token"' in refused.header("www-authenticate")
    refresh = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                       "client_id": client["client_id"]})
    assert refresh.status == 400 and refresh.json()["error"] == "invalid_grant"
    # Recorded for the other replicas, which forget the tokens they remember.
    assert Revocation("acme", Revocation.GRANT, grant_id, 0) in [
        Revocation(r.tenant, r.kind, r.revoked, 0) for r in h.store.revocations_since(0)]
    after = h.request("GET", done.header("location")).body.decode()
    assert 'role="status"' in after and "Test Client" not in after
    assert _audits(caplog, "grant_revoked_by_user") == [
        {"event": "grant_revoked_by_user", "tenant": "acme", "client_id": client["client_id"], "user_id": "user-42",
         "grant_id": grant_id}]


def test_another_persons_grant_is_refused_as_if_it_did_not_exist():
    ada, bob = Harness(), Harness(seed=10_000)
    bob.store, bob.idp.sub = ada.store, "user-7"
    _, ada_tokens = _connected(ada)
    ada_grant = _grant_id(ada, ada_tokens["access_token"])
    bob_page = bob.sign_in_to_connections()
    refused = _disconnect(bob, bob_page, ada_grant)
    assert refused.status == 404 and refused.header("location") is None
    assert "no such connection" in refused.body.decode()
    assert isinstance(ada.guard(ada_tokens["access_token"]), Principal)


@pytest.mark.parametrize("grant_id", ["no-such-grant", "", "x" * 300])
def test_an_unknown_grant_is_refused(grant_id):
    h = Harness()
    _, tokens = _connected(h)
    refused = _disconnect(h, h.sign_in_to_connections(), grant_id)
    assert refused.status == 404
    assert isinstance(h.guard(tokens["access_token"]), Principal)


def test_the_same_persons_grant_on_another_tenant_is_not_this_pages():
    acme = Harness()
    globex = Harness(tenant=tenant(slug="globex", issuer="https://globex.example.com",
                                   resource="https://globex.example.com/mcp"), seed=10_000)
    globex.store = acme.store
    _, tokens = _connected(globex)  # the same person, user-42, at another tenant
    grant_id = _grant_id(globex, tokens["access_token"])
    page = acme.sign_in_to_connections()
    assert "Test Client" not in page.body.decode()
    assert _disconnect(acme, page, grant_id).status == 404
    assert isinstance(globex.guard(tokens["access_token"]), Principal)


@pytest.mark.parametrize("token", [None, "wrong", "other session"])
def test_a_form_without_this_sessions_token_is_refused(token):
    h = Harness()
    _, tokens = _connected(h)
    page = h.sign_in_to_connections()
    if token == "other session":
        # A token the same person was shown in another browser.
        other = Harness(store=h.store, seed=10_000)
        token = hidden_value(other.sign_in_to_connections(), "form_token")
    refused = _disconnect(h, page, _grant_id(h, tokens["access_token"]), form_token=token)
    assert refused.status == 403 and "did not come from the page" in refused.body.decode()
    assert isinstance(h.guard(tokens["access_token"]), Principal)


@pytest.mark.parametrize(("origin", "status"), [("https://evil.example", 403), ("https://acme.example.com.evil", 403),
                                                 ("null", 303), ("https://ACME.example.com", 303), (None, 303)])
def test_a_form_posted_from_another_site_is_refused_by_its_origin(origin, status):
    h = Harness()
    _, tokens = _connected(h)
    page = h.sign_in_to_connections()
    form = {"form_token": hidden_value(page, "form_token"), "grant_id": hidden_value(page, "grant_id"),
            "action": "disconnect"}
    assert _post(h, form, origin).status == status
    assert isinstance(h.guard(tokens["access_token"]), Principal) == (status == 403)


def test_a_form_without_the_session_cookie_changes_nothing():
    """Another site's form arrives without the SameSite=Lax cookie."""
    h = Harness()
    _, tokens = _connected(h)
    page = h.sign_in_to_connections()
    h.cookies.pop(COOKIE)
    refused = _disconnect(h, page, hidden_value(page, "grant_id"))
    assert refused.status == 403 and "Sign in again" in refused.body.decode()
    assert isinstance(h.guard(tokens["access_token"]), Principal)


@pytest.mark.parametrize("action", [None, "revoke_everything"])
def test_a_form_with_no_known_action_is_refused(action):
    h = Harness()
    _, tokens = _connected(h)
    page = h.sign_in_to_connections()
    assert _disconnect(h, page, hidden_value(page, "grant_id"), action=action).status == 400
    assert isinstance(h.guard(tokens["access_token"]), Principal)


def test_sign_out_drops_the_cookie_and_the_page_asks_to_sign_in_again():
    h = Harness()
    page = h.sign_in_to_connections()
    out = _post(h, {"form_token": hidden_value(page, "form_token"), "action": "sign_out"})
    assert out.status == 200 and "You are signed out" in out.body.decode()
    cookie = out.header("set-cookie")
    assert cookie.startswith(f"{COOKIE}=;") and "Max-Age=0" in cookie
    assert f'<a href="{PAGE}">Sign in again</a>' in out.body.decode()
    assert h.cookies[COOKIE] == ""
    assert h.request("GET", PAGE).status == 302


def test_a_cookie_copied_before_signing_out_is_signed_out_too():
    """Signing out only dropped the browser's cookie: a copy taken before
    still opened the page, and could disconnect applications, until it
    expired. The sign-in now ends on the server, for every replica."""
    h = Harness()
    _, tokens = _connected(h)
    page = h.sign_in_to_connections()
    copied, form = h.cookies[COOKIE], hidden_value(page, "form_token")
    grant_id = hidden_value(page, "grant_id")
    assert _post(h, {"form_token": form, "action": "sign_out"}).status == 200
    h.cookies[COOKIE] = copied
    assert h.request("GET", PAGE).status == 302  # to sign in again
    refused = _disconnect(h, page, grant_id)
    assert refused.status == 403 and "nothing was changed" in refused.body.decode()
    assert isinstance(h.guard(tokens["access_token"]), Principal)
    # A new sign-in is a session of its own.
    h.cookies.pop(COOKIE)
    assert "Disconnect" in h.sign_in_to_connections().body.decode()


def test_requests_to_the_page_are_counted_per_address():
    h = Harness(remote_addr="198.51.100.7")
    allowed = h.tenant.rate_limits.connections.per_address
    for _ in range(allowed):
        assert h.request("GET", PAGE).status == 302
    limited = h.request("GET", PAGE)
    assert limited.status == 429 and limited.header("retry-after")
    assert limited.header("content-type").startswith("text/html")
    assert len(h.store._sessions) == allowed



def test_a_person_signed_in_lists_and_disconnects_while_the_identity_provider_is_away():
    import attrs

    from mcp_oauth_proxy.core.effects import ResolveUpstream, run_sync
    from mcp_oauth_proxy.core.errors import UpstreamNotReady

    h = Harness()
    _, tokens = _connected(h)
    assert h.sign_in_to_connections().status == 200
    form_token = hidden_value(h.request("GET", PAGE), "form_token")
    perform = h.perform()

    def away(effect):
        if isinstance(effect, ResolveUpstream):
            raise UpstreamNotReady("discovery failed")
        return perform(effect)

    h.tenant = attrs.evolve(h.tenant, upstream=None)  # its endpoints must now be found, and cannot be
    h.driver = lambda flow: run_sync(flow, away)
    page = h.request("GET", PAGE)
    assert page.status == 200 and "Test Client" in page.body.decode()
    gone = _post(h, {"form_token": form_token, "grant_id": _grant_id(h, tokens["access_token"]),
                     "action": "disconnect"})
    assert gone.status == 303
    assert h.guard(tokens["access_token"]).status == 401
    # Only starting a sign-in needs it: a 503 page that says when to come back.
    h.cookies.clear()
    start = h.request("GET", PAGE)
    assert start.status == 503 and start.header("retry-after") == "30"


@pytest.mark.parametrize("upstream_id", ["client:robot", "https://other-idp.example#alice", "x" * 256])
def test_an_upstream_id_that_could_pass_for_another_principal_signs_nobody_in(upstream_id):
    h = Harness()
    h.idp.sub = upstream_id
    start = h.request("GET", PAGE)
    upstream_params = params_of(start.header("location") or "")
    h.idp.nonce = upstream_params.get("nonce")
    back = h.request("GET", f"{h.tenant.issuer}/oauth/callback?" + urlencode(
        {"code": "upstream-code", "state": upstream_params["state"], "iss": UPSTREAM_ISSUER}))
    assert back.status == 403 and "cannot use" in back.body.decode()
    assert not any(name.startswith("mcp_connections_") for name in h.cookies)


def test_the_identity_providers_own_error_is_a_502_page_not_ours():
    h = Harness()
    start = h.request("GET", PAGE)
    state = params_of(start.header("location") or "")["state"]
    back = h.request("GET", f"{h.tenant.issuer}/oauth/callback?" + urlencode(
        {"error": "server_error", "state": state, "iss": UPSTREAM_ISSUER}))
    assert back.status == 502


# Clients that prove themselves at the token endpoint: a remembered approval
# skips the page for them only (RFC 8252 §8.6).
ASSURED = {"token_endpoint_auth_method": "client_secret_post"}


def _asks_consent(h: Harness, client_id: str, **extra: str) -> bool:
    """Whether an authorization by this client shows the consent page (else
    the browser's remembered approval sends it straight upstream)."""
    answer = h.request("GET", h.authorize_url(client_id, **extra))
    assert answer.status in (200, 302), answer.body
    return answer.status == 200


def _approve(h: Harness, client_id: str, **extra: str) -> None:
    page = h.request("GET", h.authorize_url(client_id, **extra))
    assert page.status == 200, page.body
    answer = h.request("POST", f"{ISSUER}/oauth/consent",
                       form={"request_id": h.consent_request_id(page), "decision": "approve"})
    assert answer.status == 303, answer.body


def test_a_disconnected_application_must_ask_again():
    # A review: the approval the browser remembered outlived the disconnect,
    # so the app had a new grant without a page shown (an upstream that
    # signs in silently showed nothing at all).
    h = Harness()
    client, tokens = _connected(h, **ASSURED)
    assert not _asks_consent(h, client["client_id"])  # remembered, as before
    _disconnect(h, h.sign_in_to_connections(), _grant_id(h, tokens["access_token"]))
    assert _asks_consent(h, client["client_id"])
    # Approved again, it is remembered again, once replicas' clocks cannot
    # disagree on which came first (an approval within CLOCK_SKEW of the
    # disconnect counts as before it).
    _approve(h, client["client_id"])
    assert _asks_consent(h, client["client_id"])
    h.now += CLOCK_SKEW + 1
    _approve(h, client["client_id"])
    h.now += 1
    assert not _asks_consent(h, client["client_id"])


def test_a_disconnect_forgets_every_browsers_approval_of_that_application_only():
    ada, bob = Harness(), Harness(seed=10_000)
    bob.store, bob.idp.sub = ada.store, "user-7"
    client, tokens = _connected(ada, **ASSURED)
    other, _ = _connected(ada, **ASSURED)
    _approve(bob, client["client_id"])
    bob.now += 1
    assert not _asks_consent(bob, client["client_id"])
    _disconnect(ada, ada.sign_in_to_connections(), _grant_id(ada, tokens["access_token"]))
    # Approvals are the browser's, not the person's (the person is not known
    # before the upstream login): whoever uses that application next is asked.
    assert _asks_consent(bob, client["client_id"])
    assert not _asks_consent(ada, other["client_id"])


def test_approvals_from_before_a_disconnect_add_no_scope_to_a_new_one():
    h = Harness()
    client = h.register(**ASSURED)
    _approve(h, client["client_id"], scope="mcp mcp:admin")
    h.now += 1
    assert not _asks_consent(h, client["client_id"], scope="mcp mcp:admin")
    params = h.login(client["client_id"], scope="mcp mcp:admin")
    access = h.redeem(client["client_id"], params["code"], client_secret=client["client_secret"]).json()["access_token"]
    h.now += 1
    _disconnect(h, h.sign_in_to_connections(), _grant_id(h, access))
    h.now += CLOCK_SKEW + 1
    _approve(h, client["client_id"], scope="mcp")
    h.now += 1
    assert not _asks_consent(h, client["client_id"], scope="mcp")
    assert _asks_consent(h, client["client_id"], scope="mcp mcp:admin")


def test_a_disconnect_is_not_undone_when_the_withdrawal_is_forgotten():
    # A review: approving another client rewrote the consent cookie with a
    # fresh expiry, keeping the disconnected app's old approval; once the
    # withdrawal's record lapsed (consent_ttl after the disconnect), the app
    # was let straight back in. Each approval now lapses consent_ttl after it
    # was given, before the withdrawal's record does.
    h = Harness(tenant=tenant(policy=Policy(consent_ttl=60)))
    client, tokens = _connected(h, **ASSURED)
    other = h.register(**ASSURED)
    _disconnect(h, h.sign_in_to_connections(), _grant_id(h, tokens["access_token"]))
    h.now += 50
    _approve(h, other["client_id"])  # the cookie rewritten, fresh
    h.now += 11  # past the withdrawal's record, inside the new cookie's life
    assert _asks_consent(h, client["client_id"])
    assert not _asks_consent(h, other["client_id"])


def test_an_approval_stamped_by_a_replica_whose_clock_runs_ahead_is_still_withdrawn():
    # A review: approved through a replica 30 s fast, disconnected through
    # another 2 s later, the approval looked newer than the disconnect.
    fast, right = Harness(), Harness(seed=10_000)
    right.store, right.cookies = fast.store, fast.cookies  # two replicas, one database, one browser
    fast.now += 30
    client, tokens = _connected(fast, **ASSURED)  # approved, stamped 30 s ahead
    right.now += 2
    _disconnect(right, right.sign_in_to_connections(), _grant_id(right, tokens["access_token"]))
    assert _asks_consent(right, client["client_id"])


def test_a_disconnect_is_not_undone_by_a_longer_consent_ttl():
    # A third review: the withdrawal was kept for the consent_ttl of its day;
    # raised later (an organization's admin may), the old approval lived on
    # in a rewritten cookie past the withdrawal's record.
    import attrs

    h = Harness(tenant=tenant(policy=Policy(consent_ttl=120)))
    client, tokens = _connected(h, **ASSURED)
    other = h.register(**ASSURED)
    _disconnect(h, h.sign_in_to_connections(), _grant_id(h, tokens["access_token"]))
    h.tenant = attrs.evolve(h.tenant, policy=Policy(consent_ttl=30 * 24 * 3600))
    h.now += 10
    _approve(h, other["client_id"])  # the cookie rewritten, for 30 days
    h.now += 125  # past the consent_ttl the disconnect was made under
    assert _asks_consent(h, client["client_id"])


def test_a_consent_ttl_is_at_most_a_year():
    from mcp_oauth_proxy.config import ConfigError, parse

    tenant_doc = {"slug": "a", "issuer": "https://a.example.com", "resource": "https://a.example.com/mcp",
                  "upstream": {"kind": "github", "client_id": "x", "client_secret": "y"}}
    with pytest.raises(ConfigError, match="consent_ttl"):
        parse({"tenants": [{**tenant_doc, "policy": {"consent_ttl": 367 * 24 * 3600}}]})
    parse({"tenants": [{**tenant_doc, "policy": {"consent_ttl": 366 * 24 * 3600}}]})
