"""The named provider presets (upstream/presets.py), each against answers
shaped like its provider's (provider_answers/*.json: the discovery document,
the token answer, the id_token's claims, the profile): the endpoints the
preset finds, the login through the core, and the user id it keeps. Then
what each must refuse."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
import pytest

from support import ISSUER, NOW, REDIRECT, Harness, params_of, tenant
from mcp_oauth_proxy import config
from mcp_oauth_proxy.app import upstream_source
from mcp_oauth_proxy.core.effects import Fetch, run_sync
from mcp_oauth_proxy.core.errors import UpstreamNotReady
from mcp_oauth_proxy.core.http import HttpRequest, HttpResponse
from mcp_oauth_proxy.core.tenant import Upstream
from mcp_oauth_proxy.core.upstream import issuer_fits

ANSWERS = Path(__file__).parent / "provider_answers"
CLIENT_ID, CLIENT_SECRET = "upstream-client", "upstream-secret-value"
TID = "9b3c1d2e-4f5a-4b6c-8d7e-0f1a2b3c4d5e"
OTHER_TID = "5e0f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"


def answers(name: str) -> dict[str, Any]:
    return json.loads((ANSWERS / f"{name}.json").read_text())


def _json(doc: Any) -> HttpResponse:
    return HttpResponse(200, (("content-type", "application/json"),), json.dumps(doc).encode())


def _unsigned(claims: dict[str, Any]) -> str:
    # The id_token comes straight from the token endpoint over TLS (core/upstream.py id_token_claims).
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part(claims)}.c2lnbmF0dXJl"


def resolved(data: dict[str, Any]) -> Upstream:
    """The preset's endpoints, its discovery answered with the recorded document."""
    up = config.UpstreamConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **data["settings"])
    assert config.upstream_problems(up, "upstream") == []
    asked: list[str] = []

    def perform(effect: Any) -> Any:
        assert isinstance(effect, Fetch)
        asked.append(effect.request.url)
        return _json(data["discovery"])

    upstream = run_sync(upstream_source(up, {}).resolve(), perform)
    assert asked == ([data["discovery_url"]] if data["discovery"] else [])
    return upstream


@attrs.define
class RecordedProvider:
    """Answers the token and userinfo endpoints with a provider's recorded
    answers; the id_token made of its recorded claims, with this login's
    nonce and times."""

    data: dict[str, Any]
    upstream: Upstream
    nonce: str | None = None
    now: int = NOW
    sent: list[HttpRequest] = attrs.Factory(list)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        if request.url == self.upstream.token_endpoint:
            token = dict(self.data["token"])
            if self.data["id_token"] is not None:
                claims = {**self.data["id_token"], "iat": self.now, "exp": self.now + 3600}
                if self.nonce is not None:
                    claims["nonce"] = self.nonce
                token["id_token"] = _unsigned(claims)
            return _json(token)
        if request.url == self.upstream.userinfo_endpoint:
            return _json(self.data["userinfo"])
        return HttpResponse(404, (), b"")


def login(data: dict[str, Any], upstream: Upstream | None = None) -> tuple[Harness, dict[str, str], str]:
    """A login through the core with the preset: (harness, what the client
    gets at its redirect URI, the URL it was sent upstream to)."""
    upstream = upstream or resolved(data)
    h = Harness(tenant=tenant(upstream=upstream))
    h.idp = RecordedProvider(data, upstream)  # type: ignore[assignment]
    client = h.register()
    page = h.request("GET", h.authorize_url(client["client_id"]))
    page = h.request("POST", f"{ISSUER}/oauth/consent",
                     form={"request_id": h.consent_request_id(page), "decision": "approve"})
    sent_to = page.header("location") or ""
    up = params_of(sent_to)
    h.idp.nonce = up.get("nonce")
    callback = {"code": "upstream-code", "state": up["state"]}
    if upstream.iss_parameter_supported:
        callback["iss"] = upstream.issuer or ""
    back = h.request("GET", f"{ISSUER}/oauth/callback?" + urlencode(callback))
    assert back.status == 302, back.body
    return h, params_of(back.header("location") or ""), sent_to


PRESETS = sorted(p.stem for p in ANSWERS.glob("*.json"))


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_finds_its_endpoints(name: str) -> None:
    data = answers(name)
    expected = data["expected"]
    up = resolved(data)
    assert (up.issuer, up.authorization_endpoint, up.token_endpoint, up.userinfo_endpoint) == (
        expected["issuer"], expected["authorization_endpoint"], expected["token_endpoint"],
        expected["userinfo_endpoint"])
    assert " ".join(up.scopes) == expected["scope"]
    assert up.token_auth_method == expected["token_auth_method"]
    assert up.oidc is (data["id_token"] is not None)
    assert up.iss_parameter_supported is expected.get("iss_parameter_supported", False)


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_signs_a_person_in_under_its_stable_user_id(name: str) -> None:
    data = answers(name)
    h, params, sent_to = login(data)
    assert sent_to.startswith(data["expected"]["authorization_endpoint"] + "?")
    assert params_of(sent_to)["scope"] == data["expected"]["scope"]
    assert params["code"].startswith("mcp_code_") and params["iss"] == ISSUER
    grant = next(iter(h.store._grants.values()))[0]
    assert grant.user_id == data["expected"]["user_id"]
    grant = h.store.get_grant(grant.tenant, grant.grant_id)
    assert grant.upstream.access_token == data["token"]["access_token"]
    assert (grant.upstream.refresh_token is not None) is data["expected"]["refresh_token"]
    token_call = h.idp.sent[0]
    assert token_call.url == data["expected"]["token_endpoint"]
    basic = any(n == "authorization" and v.startswith("Basic ") for n, v in token_call.headers)
    assert basic is (data["expected"]["token_auth_method"] == "client_secret_basic")
    assert h.idp.sent[1].url == data["expected"]["userinfo_endpoint"]


def _refused(data: dict[str, Any], upstream: Upstream | None = None) -> dict[str, str]:
    h, params, _ = login(data, upstream)
    assert "code" not in params and params["state"] == "client-state"
    assert h.store._grants == {}
    return params


# -- Entra -----------------------------------------------------------------------------


def test_entra_single_tenant_refuses_a_token_from_another_tenant() -> None:
    data = answers("entra")
    data["id_token"].update(iss=f"https://login.microsoftonline.com/{OTHER_TID}/v2.0", tid=OTHER_TID)
    assert _refused(data)["error"] == "access_denied"


def test_entra_multi_tenant_fills_the_issuer_template_with_the_tokens_own_tid() -> None:
    data = answers("entra_common")
    data["id_token"]["tid"] = TID  # its iss names OTHER_TID: a token of one tenant passing for another's
    assert _refused(data)["error"] == "access_denied"
    del data["id_token"]["tid"]
    assert _refused(data)["error"] == "access_denied"
    data = answers("entra_common")
    data["id_token"]["iss"] = "https://login.microsoftonline.com/{tenantid}/v2.0"  # the template itself
    assert _refused(data)["error"] == "access_denied"


def test_entra_user_id_is_tid_and_oid_not_the_pairwise_sub() -> None:
    data = answers("entra")
    data["id_token"]["sub"] = data["userinfo"]["sub"] = "another-apps-pairwise-sub"
    h, params, _ = login(data)
    assert next(iter(h.store._grants.values()))[0].user_id == f"{TID}:00000000-0000-0000-66f3-3332eca7ea81"
    without_oid = answers("entra")
    del without_oid["id_token"]["oid"]
    assert "code" not in _refused(without_oid)


def test_entra_discovery_naming_another_tenant_is_refused() -> None:
    data = answers("entra")
    data["discovery"]["issuer"] = f"https://login.microsoftonline.com/{OTHER_TID}/v2.0"
    with pytest.raises(UpstreamNotReady, match="names another issuer"):
        resolved(data)


@pytest.mark.parametrize("expected, iss, tid, fits", [
    ("https://idp.example", "https://idp.example", None, True),
    ("https://idp.example", "https://idp.example/", None, False),
    ("https://login.microsoftonline.com/{tenantid}/v2.0", f"https://login.microsoftonline.com/{TID}/v2.0", TID, True),
    ("https://login.microsoftonline.com/{tenantid}/v2.0", f"https://login.microsoftonline.com/{TID}/v2.0", None, True),
    ("https://login.microsoftonline.com/{tenantid}/v2.0", f"https://login.microsoftonline.com/{TID}/v2.0",
     OTHER_TID, False),
    ("https://login.microsoftonline.com/{tenantid}/v2.0", f"https://login.microsoftonline.com/{TID}/v2.0", "", False),
    ("https://login.microsoftonline.com/{tenantid}/v2.0", "https://login.microsoftonline.com/evil.example/v2.0",
     None, False),
    ("https://login.microsoftonline.com/{tenantid}/v2.0", f"https://login.microsoftonline.com/{TID}/x/v2.0",
     None, False),
    ("https://login.microsoftonline.com/{tenantid}/v2.0", f"https://evil.example/{TID}/v2.0", None, False),
    ("https://login.microsoftonline.com/{tenantid}/v2.0", "https://login.microsoftonline.com//v2.0", None, False),
])
def test_issuer_templates(expected: str, iss: str, tid: str | None, fits: bool) -> None:
    assert issuer_fits(expected, iss, tid) is fits


def test_an_authorization_response_iss_must_fit_the_template() -> None:
    data = answers("entra_common")
    up = attrs.evolve(resolved(data), iss_parameter_supported=True)
    h = Harness(tenant=tenant(upstream=up))
    h.idp = RecordedProvider(data, up)  # type: ignore[assignment]
    client = h.register()
    page = h.request("GET", h.authorize_url(client["client_id"]))
    page = h.request("POST", f"{ISSUER}/oauth/consent",
                     form={"request_id": h.consent_request_id(page), "decision": "approve"})
    state = params_of(page.header("location") or "")["state"]
    back = h.request("GET", f"{ISSUER}/oauth/callback?" + urlencode(
        {"code": "c", "state": state, "iss": "https://login.microsoftonline.com/attacker/v2.0"}))
    assert params_of(back.header("location") or "")["error"] == "access_denied"
    assert h.idp.sent == []  # refused before the code went anywhere


# -- the others --------------------------------------------------------------------------


def test_slack_names_a_person_by_workspace_and_user() -> None:
    data = answers("slack")
    del data["id_token"]["https://slack.com/team_id"]
    del data["userinfo"]["https://slack.com/team_id"]
    assert "code" not in _refused(data)


def test_a_profile_for_another_person_is_refused() -> None:
    data = answers("keycloak")
    data["userinfo"]["sub"] = "someone-else"
    assert _refused(data)["error"] == "access_denied"


@pytest.mark.parametrize("name", ["discord", "ghes"])
def test_oauth2_presets_need_the_profiles_id(name: str) -> None:
    data = answers(name)
    del data["userinfo"]["id"]
    assert "code" not in _refused(data)


def test_keycloak_requires_the_iss_it_advertises() -> None:
    data = answers("keycloak")
    up = resolved(data)
    h = Harness(tenant=tenant(upstream=up))
    h.idp = RecordedProvider(data, up)  # type: ignore[assignment]
    client = h.register()
    page = h.request("GET", h.authorize_url(client["client_id"]))
    page = h.request("POST", f"{ISSUER}/oauth/consent",
                     form={"request_id": h.consent_request_id(page), "decision": "approve"})
    state = params_of(page.header("location") or "")["state"]
    back = h.request("GET", f"{ISSUER}/oauth/callback?" + urlencode({"code": "c", "state": state}))
    assert params_of(back.header("location") or "")["error"] == "access_denied"


def test_the_configurations_scopes_win_over_the_presets() -> None:
    data = answers("okta_custom")
    data["settings"].update(scopes=["openid", "offline_access"])
    up = resolved(data)
    assert up.scopes == ("openid", "offline_access")


def test_the_cognito_issuer_comes_from_the_pool_id() -> None:
    up = config.UpstreamConfig(kind="cognito", client_id="c", client_secret="s", user_pool_id="us-gov-west-1_Zz9")
    assert upstream_source(up, {}).discovery_url == (  # type: ignore[attr-defined]
        "https://cognito-idp.us-gov-west-1.amazonaws.com/us-gov-west-1_Zz9/.well-known/openid-configuration")


def test_gitlab_self_managed_is_its_issuer() -> None:
    data = answers("gitlab")
    base = "https://git.acme.example/gitlab"
    text = json.dumps(data).replace("https://gitlab.com", base)
    data = json.loads(text)
    data["settings"]["issuer"] = base
    h, params, sent_to = login(data)
    assert sent_to.startswith(f"{base}/oauth/authorize?") and "code" in params
    assert urlsplit(h.idp.sent[0].url).netloc == "git.acme.example"
    assert parse_qs(h.idp.sent[0].body.decode())["redirect_uri"] == [f"{ISSUER}/oauth/callback"]
    assert REDIRECT  # the client's, untouched


@pytest.mark.parametrize("claim", ["email", "preferred_username", "upn", "tid+email"])
def test_a_claim_a_person_can_change_is_never_the_user_id(claim: str) -> None:
    from mcp_oauth_proxy import config as config_mod

    problems = config_mod.upstream_problems(config_mod.UpstreamConfig(
        kind="entra", tenant="common", client_id="c", client_secret="s", user_id_claim=claim), "up")
    assert any("user_id_claim" in p and "can be changed by the person" in p for p in problems), problems


@pytest.mark.parametrize("kind", ["okta", "keycloak"])
def test_an_issuer_with_a_trailing_slash_that_could_never_match_is_named(kind: str) -> None:
    from mcp_oauth_proxy import config as config_mod

    issuer = "https://kc.example/realms/acme/" if kind == "keycloak" else "https://acme.okta.com/oauth2/default/"
    problems = config_mod.upstream_problems(config_mod.UpstreamConfig(
        kind=kind, issuer=issuer, client_id="c", client_secret="s"), "up")
    assert any("trailing slash" in p for p in problems), problems


@pytest.mark.parametrize("value", ["²", "١٢", "9" * 40])
def test_an_odd_expires_in_is_ignored_not_a_500(value: str) -> None:
    import json

    from mcp_oauth_proxy.core.http import HttpResponse
    from mcp_oauth_proxy.core.upstream import parse_token_response

    tokens, _ = parse_token_response(HttpResponse(200, (("content-type", "application/json"),), json.dumps(
        {"access_token": "at", "token_type": "Bearer", "expires_in": value}).encode()), 1_800_000_000)
    assert tokens.expires_at is None


@pytest.mark.parametrize("cloud", ["login.microsoftonline.us", "login.partner.microsoftonline.cn"])
def test_entra_in_a_national_cloud_is_found_at_its_own_sign_in_host(cloud: str) -> None:
    from mcp_oauth_proxy.app import upstream_source

    tid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    single = upstream_source(config.UpstreamConfig(kind="entra", tenant=tid, domain=cloud, client_id="c",
                                                   client_secret="s"), {})
    assert single.issuer == f"https://{cloud}/{tid}/v2.0"
    assert single.discovery_url == f"https://{cloud}/{tid}/v2.0/.well-known/openid-configuration"
    common = upstream_source(config.UpstreamConfig(kind="entra", tenant="common", domain=cloud, client_id="c",
                                                   client_secret="s"), {})
    assert common.issuer == f"https://{cloud}/{{tenantid}}/v2.0"
    # The global cloud when none is named; nothing but Microsoft's sign-in hosts is one.
    default = upstream_source(config.UpstreamConfig(kind="entra", tenant=tid, client_id="c", client_secret="s"), {})
    assert default.issuer == f"https://login.microsoftonline.com/{tid}/v2.0"
    assert config.upstream_problems(config.UpstreamConfig(kind="entra", tenant=tid, domain="login.evil.example",
                                                          client_id="c", client_secret="s"), "up") == [
        "up.domain: for entra, the cloud's sign-in host: login.microsoftonline.com, login.microsoftonline.us or "
        "login.partner.microsoftonline.cn"]
