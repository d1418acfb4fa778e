"""Client ID Metadata Documents in the core, and the audit events."""

from __future__ import annotations

import json
import logging

import attrs
import pytest

from support import DOC_URL, ISSUER, DocHarness, Harness, params_of, refusal_of, tenant
from support import document as _doc
from mcp_oauth_proxy.core.cimd import MAX_CACHE, MIN_CACHE, cache_seconds
from mcp_oauth_proxy.core.effects import Audit, RedeemCode, run_sync
from mcp_oauth_proxy.core.errors import FetchFailed
from mcp_oauth_proxy.core.http import HttpResponse
from mcp_oauth_proxy.runtime import sync_performer

def test_metadata_advertises_document_support():
    doc = Harness().request("GET", f"{ISSUER}/.well-known/oauth-authorization-server").json()
    assert doc["client_id_metadata_document_supported"] is True


def test_a_document_client_completes_the_whole_flow():
    h = DocHarness()
    h.serve(_doc())
    page = h.request("GET", h.authorize_url(DOC_URL))
    assert page.status == 200
    html = page.body.decode()
    assert "Doc Client" in html and 'class="host">app.example.net<' in html
    assert h.fetched[0].allow_loopback is False
    params = h.login(DOC_URL)
    response = h.redeem(DOC_URL, params["code"])
    assert response.status == 200, response.body
    assert h.guard(response.json()["access_token"]).client_id == DOC_URL
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"],
                         "client_id": DOC_URL})
    assert refreshed.status == 200
    # A document client is never stored, so there is no registration to keep from lapsing.
    assert [e.keep_client for e in h.effects if isinstance(e, RedeemCode)] == [False]


@pytest.mark.parametrize(
    "doc, reason",
    [
        (_doc(client_id="https://app.example.net/other.json"), "client_id is not its URL"),
        (_doc(client_id=DOC_URL + "/"), "client_id is not its URL"),
        (_doc(client_name=None), "no client_name"),
        (_doc(client_name="  "), "no client_name"),
        (_doc(client_name="\u2800"), "no client_name"),
        (_doc(redirect_uris=None), "redirect_uris is required"),
        (_doc(redirect_uris=["javascript:alert(1)"]), "not allowed"),
        (_doc(token_endpoint_auth_method="client_secret_basic"), "only token_endpoint_auth_method"),
        (_doc(client_secret="s3cret"), "must not contain a client secret"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps(_doc(client_name="x" * 6000)).encode(), "larger than"),
    ],
)
def test_bad_documents_are_refused_with_their_reason_on_an_html_page(doc, reason):
    h = DocHarness()
    h.serve(doc)
    page = h.request("GET", h.authorize_url(DOC_URL))
    assert page.status == 400 and page.header("location") is None
    assert reason in page.body.decode()


def test_redirect_uri_must_be_one_of_the_documents():
    h = DocHarness()
    h.serve(_doc(redirect_uris=["https://app.example.net/cb"]))
    page = h.request("GET", h.authorize_url(DOC_URL))
    assert page.status == 400 and page.header("location") is None


@pytest.mark.parametrize(
    "answer, reason",
    [
        (HttpResponse(404, (), b""), "HTTP 404"),
        (HttpResponse(200, (("content-type", "text/html"),), b"{}"), "application/json"),
        (FetchFailed("the host resolves to a private or reserved address"), "private or reserved"),
    ],
)
def test_unfetchable_documents_are_refused_with_a_reason(answer, reason):
    h = DocHarness()
    h.documents[DOC_URL] = answer
    page = h.request("GET", h.authorize_url(DOC_URL))
    assert page.status == 400 and reason in page.body.decode()


@pytest.mark.parametrize(
    "client_id",
    ["https://app.example.net", "https://app.example.net/", "https://app.example.net/a/../b.json",
     "https://user:pw@app.example.net/c.json", "https://app.example.net/c.json#frag",
     "https://\u0430\u0440\u0440\u04cf\u0435.com/c.json", "https://app.example.net/caf\u00e9.json",
     "https://app.example.net\\@evil.example/c.json", "https://app.example.net/a\\..\\c.json",
     "https://good.com%2eevil.com/c.json",
     # RFC 3986 §6.2.2.2: %2E is "."; a dot segment written so is one all the same.
     "https://app.example.net/official/%2e%2e/u/mallory/c.json", "https://app.example.net/a/%2E/c.json",
     "https://app.example.net/a/.%2e/c.json",
     # A third review: an encoded "/" or "%" makes another path on some hosts, a ";" hides ".." from others.
     "https://app.example.net/official%2F..%2Fu%2Fmallory%2Fc.json", "https://app.example.net/official/%2e%2e%2fx.json",
     "https://app.example.net/official/..;/u/c.json", "https://app.example.net/official/%252e%252e/c.json",
     "https://app.example.net/a%5C..%5Cc.json", "https://app.example.net/a%00/c.json",
     # A fourth: a long one is a long audit event at every consent, kept 90 days.
     "https://app.example.net/" + "a" * 500 + ".json"],
)
def test_malformed_client_id_urls_are_refused_without_fetching(client_id):
    h = DocHarness()
    page = h.request("GET", h.authorize_url(client_id))
    assert page.status == 400 and h.fetched == []


def test_token_endpoint_refuses_a_bad_document_as_invalid_client():
    h = DocHarness()
    h.serve(_doc(client_id="https://elsewhere.example/c.json"))
    response = h.token({"grant_type": "authorization_code", "code": "x", "client_id": DOC_URL})
    assert response.status == 401 and response.json()["error"] == "invalid_client"
    assert "client_id is not its URL" in response.json()["error_description"]


def test_document_scopes_beyond_the_tenant_are_dropped_not_fatal():
    h = DocHarness()
    h.serve(_doc(scope="mcp calendar.read"))
    assert h.request("GET", h.authorize_url(DOC_URL, scope="mcp")).status == 200
    back = h.request("GET", h.authorize_url(DOC_URL, scope="mcp:admin"))
    assert refusal_of(back)["error"] == "invalid_scope"


def test_tenant_may_turn_documents_off_or_allow_loopback():
    off = DocHarness(tenant=tenant(client_metadata_documents=False))
    off.serve(_doc())
    assert off.request("GET", off.authorize_url(DOC_URL)).status == 400 and off.fetched == []
    assert off.request("GET", f"{ISSUER}/.well-known/oauth-authorization-server").json()[
        "client_id_metadata_document_supported"] is False
    dev = DocHarness(tenant=tenant(client_metadata_allow_loopback=True))
    dev.serve(_doc())
    dev.request("GET", dev.authorize_url(DOC_URL))
    assert dev.fetched[0].allow_loopback is True


def test_without_a_document_fetcher_documents_are_refused_clearly():
    h = Harness()
    page = h.request("GET", h.authorize_url(DOC_URL))
    assert page.status == 400 and "not enabled" in page.body.decode()


@pytest.mark.parametrize(
    "header, seconds",
    [(None, MIN_CACHE), ("no-store", MIN_CACHE), ("max-age=5", MIN_CACHE), ("public, max-age=3600", 3600),
     ("max-age=99999999", MAX_CACHE), ('s-maxage=10, max-age="600"', 600), ("private", MIN_CACHE)],
)
def test_cache_lifetime_follows_cache_control_within_bounds(header, seconds):
    assert cache_seconds(header) == seconds


# -- audit ---------------------------------------------------------------------------


def test_audit_events_of_a_full_flow_name_tenant_client_user_and_no_secret(caplog):
    caplog.set_level(logging.INFO, logger="mcp_oauth_proxy.audit")
    h = Harness()
    client, tokens = h.tokens(token_endpoint_auth_method="client_secret_post")
    secret_form = {"client_id": client["client_id"], "client_secret": client["client_secret"]}
    h.now += 60
    refreshed = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **secret_form}).json()
    h.now += h.tenant.policy.refresh_grace + 1
    h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **secret_form})
    second_client, second = h.tokens()
    h.request("POST", f"{ISSUER}/oauth/revoke", form={"token": second["refresh_token"], "client_id": second_client["client_id"]})
    records = [r.audit for r in caplog.records if hasattr(r, "audit")]
    events = [r["event"] for r in records]
    for expected in ("client_registered", "consent_given", "login_completed", "tokens_issued", "tokens_refreshed",
                     "refresh_reuse_grant_revoked", "grant_revoked"):
        assert expected in events, expected
    issued = records[events.index("tokens_issued")]
    assert issued["tenant"] == "acme" and issued["client_id"] == client["client_id"] and issued["user_id"] == "user-42"
    log_text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in [client["client_secret"], tokens["access_token"], tokens["refresh_token"], refreshed["access_token"],
                   refreshed["refresh_token"], second["access_token"], second["refresh_token"], "upstream-at-1",
                   "upstream-rt-1", "upstream-secret-value"]:
        assert secret not in log_text


def test_a_refresh_keeps_its_event_in_the_rotations_own_commit_and_logs_it_once(caplog):
    caplog.set_level(logging.INFO, logger="mcp_oauth_proxy.audit")
    h = Harness()
    client, tokens = h.tokens()
    writes: list[str] = []
    rotate, record = h.store.rotate_refresh_token, h.store.record_audit
    h.store.rotate_refresh_token = lambda *a, **kw: (writes.append("rotate"), rotate(*a, **kw))[1]  # type: ignore[method-assign]
    h.store.record_audit = lambda *a, **kw: (writes.append("record"), record(*a, **kw))[1]  # type: ignore[method-assign]
    h.now += 60
    answer = h.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                      "client_id": client["client_id"]})
    assert answer.status == 200
    assert writes == ["rotate"]  # one write: the event went with the rotation
    (kept,) = [e for e in h.store.list_audit_events(100) if e.event == "tokens_refreshed"]
    assert kept.client_id == client["client_id"] and kept.user_id == "user-42" and kept.tenant == "acme"
    logged = [r.audit for r in caplog.records if hasattr(r, "audit") and r.audit["event"] == "tokens_refreshed"]
    assert len(logged) == 1 and logged[0]["grant_id"] == kept.detail["grant_id"]


def test_consent_refused_and_code_replay_are_audited(caplog):
    caplog.set_level(logging.INFO, logger="mcp_oauth_proxy.audit")
    h = Harness()
    client = h.register()
    page = h.request("GET", h.authorize_url(client["client_id"]))
    h.request("POST", f"{ISSUER}/oauth/consent", form={"request_id": h.consent_request_id(page), "decision": "deny"})
    code = h.login(client["client_id"])["code"]
    h.redeem(client["client_id"], code)
    h.redeem(client["client_id"], code)
    events = [r.audit["event"] for r in caplog.records if hasattr(r, "audit")]
    assert "consent_refused" in events and "code_replay_grant_revoked" in events


def test_audit_effect_is_sent_to_the_audit_callable():
    seen: list[Audit] = []
    h = Harness()
    h.driver = lambda flow: run_sync(flow, sync_performer(h.store, h.idp, audit=seen.append))
    h.register()
    assert [a.event for a in seen] == ["client_registered"]
    assert attrs.asdict(seen[0])["tenant"] == "acme"
