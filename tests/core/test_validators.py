"""Tables of cases for the pure validators: redirect URIs, PKCE, scopes and
resources, tenant picking, and the HTTP parsing every endpoint shares."""

from __future__ import annotations

import hashlib
import base64

import pytest

from mcp_oauth_proxy.core import pkce
from mcp_oauth_proxy.core.errors import (
    InvalidGrant,
    InvalidRedirectUri,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
)
from mcp_oauth_proxy.core.http import Request, add_query, form_params, parse_params, required, single
from mcp_oauth_proxy.core.redirect_uris import (
    check_registrable,
    is_loopback_host,
    is_loopback_redirect,
    matches,
    shown_host,
)
from mcp_oauth_proxy.core.scopes import check_resource, choose_scope, normalize_resource, parse_scope
from mcp_oauth_proxy.core.tenancy import normalize_host, pick_tenant

from support import tenant

# -- redirect URIs: what may be registered ----------------------------------------

REGISTRABLE = [
    # (uri, application_type) that must be accepted
    ("https://app.example.com/callback", "web"),
    ("https://app.example.com/callback", "native"),
    ("https://app.example.com:8443/cb?tenant=1", "web"),  # a query is allowed (RFC 6749 §3.1.2)
    ("https://claude.ai/api/mcp/auth_callback", "web"),
    # RFC 8252 §7.3 / RFC 9700 §4.1.3: http only on loopback
    ("http://localhost/callback", "native"),
    ("http://localhost:3000/callback", "web"),
    ("http://127.0.0.1:33418/callback", "native"),
    ("http://127.0.0.1/callback", "web"),
    ("http://127.1.2.3:8080/cb", "native"),  # all of 127/8 is loopback
    ("http://[::1]:8080/callback", "native"),
    ("http://[::1]/callback", "web"),
    ("HTTP://LOCALHOST:8080/cb", "native"),  # scheme and host are case-insensitive
    # RFC 8252 §7.1: private-use schemes for native apps
    ("com.example.app:/oauth2redirect", "native"),
    ("cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback", "native"),
    ("vscode://vscode.github-authentication/did-authenticate", "native"),
]


@pytest.mark.parametrize("uri, application_type", REGISTRABLE)
def test_registrable(uri, application_type):
    check_registrable(uri, application_type)


NOT_REGISTRABLE = [
    # http on a host other than loopback (RFC 9700 §4.1.3)
    ("http://app.example.com/callback", "web"),
    ("http://app.example.com/callback", "native"),
    ("http://localhost.evil.example/cb", "native"),
    ("http://127.0.0.1.evil.example/cb", "native"),
    ("http://10.0.0.1/cb", "native"),
    ("http://0.0.0.0:8080/cb", "native"),
    ("http://[::2]/cb", "native"),
    # private-use schemes only for native apps (RFC 8252 §7.1)
    ("com.example.app:/oauth2redirect", "web"),
    ("cursor://anysphere.cursor-retrieval/oauth/callback", "web"),
    # schemes that run script or read files
    ("javascript:alert(1)", "native"),
    ("JavaScript:alert(document.cookie)", "native"),
    ("javascript://example.com/%0aalert(1)", "native"),
    ("data:text/html,<script>alert(1)</script>", "native"),
    ("file:///etc/passwd", "native"),
    ("vbscript:msgbox(1)", "native"),
    ("about:blank", "native"),
    ("blob:https://example.com/uuid", "native"),
    # fragments (RFC 6749 §3.1.2)
    ("https://app.example.com/cb#frag", "web"),
    ("https://app.example.com/cb#", "web"),
    ("http://127.0.0.1:3000/cb#x", "native"),
    # not absolute
    ("/callback", "web"),
    ("callback", "web"),
    ("//app.example.com/callback", "web"),
    ("app.example.com/callback", "web"),
    ("", "web"),
    ("https:///callback", "web"),  # https without a host
    ("https:callback", "web"),
    ("1app:/cb", "native"),  # a scheme starts with a letter (RFC 3986 §3.1)
    # spaces and control characters
    ("https://app.example.com/call back", "web"),
    ("https://app.example.com/cb\n", "web"),
    ("https://app.example.com/cb\r\nSet-Cookie: x=y", "web"),
    ("https://app.example.com/\tcb", "web"),
    ("https://app.example.com/cb\x00", "web"),
    ("https://app.example.com/cb\x7f", "web"),
    (" https://app.example.com/cb", "web"),
    ("https://app.example.com/cb\x85", "web"),  # C1 control (NEL)
    ("https://app.example.com/cb\u2028", "web"),  # line separator
    ("https://app.example.com/cb\u202e", "web"),  # right-to-left override
    ("https://app.example.com/cb\ud800", "web"),  # lone surrogate: not encodable
    # bad ports
    ("https://app.example.com:99999/cb", "web"),
    ("https://app.example.com:65536/cb", "web"),
    ("https://app.example.com:-1/cb", "web"),
    ("https://app.example.com:abc/cb", "web"),
    ("http://127.0.0.1:+80/cb", "native"),
    ("http://127.0.0.1:8_0/cb", "native"),
    ("https://[::1/cb", "web"),  # unbalanced IPv6 literal
    ("https://app.example.com/" + "a" * 3000, "web"),  # too long
    # read one way by Python and another by a browser or a person
    ("http://evil.com\\@127.0.0.1/cb", "native"),  # a browser goes to evil.com
    ("http://127.0.0.1\\@evil.com/cb", "native"),
    ("https://app.example.com\\cb", "web"),
    ("https://trusted.example@evil.example/cb", "web"),  # shown as "trusted.example..."
    ("https://user:pw@app.example.com/cb", "web"),
    ("http://u:pw@127.0.0.1/cb", "native"),
    ("https://@app.example.com/cb", "web"),
    # non-ASCII: a look-alike host, or a header it cannot go in
    ("https://\u0430\u0440\u0440\u04cf\u0435.com/cb", "web"),  # Cyrillic "apple"
    ("https://app.example.com/caf\u00e9", "web"),
    ("https://b\u00fccher.example/cb", "web"),
    # a host a browser decodes and Python does not: good.com.evil.com to a browser
    ("https://good.com%2eevil.com/cb", "web"),
    ("https://good.com%E3%80%82evil.com/cb", "web"),  # an ideographic full stop
    ("http://127.0.0.1%2eevil.com/cb", "native"),
    ("https://good!com/cb", "web"),
    # hosts a browser reads as 127.0.0.1, shown as written
    ("https://0x7f.1/cb", "web"), ("https://2130706433/cb", "web"), ("https://0177.0.0.1/cb", "web"),
    ("https://127.1/cb", "web"), ("http://127.1/cb", "native"),
    # IP literals a browser cannot use
    ("http://[::1]x/cb", "native"), ("http://[::1]]/cb", "native"), ("http://[::1%25eth0]/cb", "native"),
]


@pytest.mark.parametrize("uri, application_type", NOT_REGISTRABLE)
def test_not_registrable(uri, application_type):
    with pytest.raises(InvalidRedirectUri) as info:
        check_registrable(uri, application_type)
    assert info.value.error == "invalid_redirect_uri"
    assert info.value.status == 400


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("localhost", True), ("LOCALHOST", True), ("127.0.0.1", True), ("127.255.0.9", True),
        ("::1", True), ("[::1]", True), (None, False), ("", False), ("example.com", False),
        ("localhost.example.com", False), ("128.0.0.1", False), ("::", False), ("0.0.0.0", False),
    ],
)
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "uri, loopback",
    [
        ("http://127.0.0.1:33418/cb", True), ("http://localhost/cb", True), ("http://[::1]:9/cb", True),
        ("http://evil.com\\@127.0.0.1/cb", False),  # Python's host, not the browser's
        ("http://u:pw@127.0.0.1/cb", False), ("https://app.example.com/cb", False), ("com.example:/cb", False),
        ("http://\u0131ocalhost/cb", False),
    ],
)
def test_the_loopback_reassurance_is_only_for_a_literal_loopback_host(uri, loopback):
    assert is_loopback_redirect(uri) is loopback


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("https://app.example.com:8443/cb?x=1", "app.example.com:8443"),  # another port, another site
        ("https://app.example.com:443/cb", "app.example.com"),  # the scheme's own
        ("http://127.0.0.1:33418/callback", "127.0.0.1"),  # a native app's port changes from run to run
        ("http://[::1]:8080/cb", "[::1]"),
        ("https://trusted.example@evil.example/cb", "evil.example"),  # the host it really goes to
        ("https://xn--80ak6aa92e.com/cb", "xn--80ak6aa92e.com"),
        ("https://\u0430\u0440\u0440\u04cf\u0435.com/cb", "xn--80ak6aa92e.com"),  # registered under older rules
        ("com.example.app:/oauth2redirect", "com.example.app:"),
        ("intent://evil.com/cb", "intent://evil.com"),  # an app, not the web site evil.com
        ("cursor://anysphere.cursor-retrieval/oauth/cb", "cursor://anysphere.cursor-retrieval"),
        ("https://[::1/cb", "https:"),
    ],
)
def test_the_consent_page_shows_the_redirect_host_alone_in_ascii(uri, shown):
    assert shown_host(uri) == shown


# -- redirect URIs: matching a request against the registered ones --------------

MATCHES = [
    # exact string match (RFC 9700 §4.1.3)
    ("https://app.example.com/cb", ("https://app.example.com/cb",)),
    ("https://app.example.com/cb?a=1", ("https://x.example/cb", "https://app.example.com/cb?a=1")),
    ("com.example.app:/cb", ("com.example.app:/cb",)),
    # RFC 8252 §7.3: a loopback redirect may use any port
    ("http://127.0.0.1:51234/callback", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:51234/callback", ("http://127.0.0.1:33418/callback",)),
    ("http://127.0.0.1/callback", ("http://127.0.0.1:33418/callback",)),
    ("http://[::1]:51234/callback", ("http://[::1]/callback",)),
    ("http://[::1]:51234/callback", ("http://[::1]:8080/callback",)),
    ("http://localhost:51234/callback", ("http://localhost:3000/callback",)),
    ("http://127.0.0.1:1/cb?x=1", ("http://127.0.0.1:2/cb?x=1",)),
    ("http://127.0.0.1:/cb", ("http://127.0.0.1:2/cb",)),  # an empty port
    ("HTTP://LOCALHOST:5/cb", ("HTTP://LOCALHOST:8080/cb",)),  # as registered
]


@pytest.mark.parametrize("requested, registered", MATCHES)
def test_matches(requested, registered):
    assert matches(requested, registered)


NO_MATCH = [
    # registered under older rules, never matched now
    ("http://u:pw@127.0.0.1:5/cb", ("http://u:pw@127.0.0.1/cb",)),
    ("http://evil.com\\@127.0.0.1/cb", ("http://evil.com\\@127.0.0.1/cb",)),
    ("https://\u0430\u0440\u0440\u04cf\u0435.com/cb", ("https://\u0430\u0440\u0440\u04cf\u0435.com/cb",)),
    # non-loopback: the port is part of the exact match
    ("https://app.example.com:8443/cb", ("https://app.example.com/cb",)),
    ("https://app.example.com/cb", ("https://app.example.com:443/cb",)),
    # https is never port-relaxed, even on localhost
    ("https://localhost:8443/cb", ("https://localhost/cb",)),
    ("https://127.0.0.1:8443/cb", ("https://127.0.0.1:9443/cb",)),
    # path, query and case differences
    ("https://app.example.com/cb/", ("https://app.example.com/cb",)),
    ("https://app.example.com/CB", ("https://app.example.com/cb",)),
    ("https://APP.example.com/cb", ("https://app.example.com/cb",)),
    ("https://app.example.com/cb?a=1", ("https://app.example.com/cb",)),
    ("https://app.example.com/cb", ("https://app.example.com/cb?a=1",)),
    ("https://app.example.com/cb/../cb", ("https://app.example.com/cb",)),
    ("https://app.example.com/cb%2F", ("https://app.example.com/cb/",)),
    ("https://app.example.com.evil.example/cb", ("https://app.example.com/cb",)),
    ("https://app.example.com/cb#x", ("https://app.example.com/cb",)),
    # loopback: any port, but the same scheme, host, path, query
    ("http://127.0.0.1:5000/other", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:5000/callback/", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:5000/Callback", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:5000/callback?x=1", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:5000/callback", ("http://127.0.0.1/callback?x=1",)),
    ("http://localhost:5000/callback", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:5000/callback", ("http://localhost/callback",)),
    ("http://[::1]:5000/callback", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.2:5000/callback", ("http://127.0.0.1/callback",)),
    ("https://127.0.0.1:5000/callback", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:5000/callback", ("https://127.0.0.1/callback",)),
    ("HTTP://127.0.0.1:5000/callback", ("http://127.0.0.1/callback",)),
    ("http://LOCALHOST:5000/callback", ("http://localhost/callback",)),
    # a fragment is never registered, so it never matches (RFC 6749 §3.1.2)
    ("http://127.0.0.1:5000/callback#frag", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:5000/callback#", ("http://127.0.0.1/callback",)),
    # user info is part of the exact match too
    ("http://user@127.0.0.1:5000/callback", ("http://127.0.0.1/callback",)),
    ("http://u:other@127.0.0.1:5000/callback", ("http://u:pw@127.0.0.1/callback",)),
    # bad ports never match
    ("http://127.0.0.1:99999/callback", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1:abc/callback", ("http://127.0.0.1/callback",)),
    ("http://evil.example/callback", ("http://127.0.0.1/callback",)),
    ("", ("http://127.0.0.1/callback",)),
    ("http://127.0.0.1/callback", ()),
]


@pytest.mark.parametrize("requested, registered", NO_MATCH)
def test_no_match(requested, registered):
    assert not matches(requested, registered)


# -- PKCE (RFC 7636) ---------------------------------------------------------------

# RFC 7636 Appendix B: the 32 octets, their base64url verifier, and the S256 challenge.
RFC7636_OCTETS = bytes([
    116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186,
    22, 212, 37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
])
RFC7636_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC7636_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_s256_rfc7636_appendix_b():
    assert base64.urlsafe_b64encode(RFC7636_OCTETS).rstrip(b"=").decode() == RFC7636_VERIFIER
    assert pkce.s256(RFC7636_VERIFIER) == RFC7636_CHALLENGE
    pkce.check_verifier(RFC7636_VERIFIER, pkce.check_challenge(RFC7636_CHALLENGE, "S256"))


@pytest.mark.parametrize(
    "verifier",
    ["a" * 43, "A" * 128, "0123456789-._~abcdefghijklmnopqrstuvwxyzABCDEFG", "~" * 60],
)
def test_verifier_shapes_accepted(verifier):
    pkce.check_verifier(verifier, pkce.s256(verifier))


@pytest.mark.parametrize(
    "challenge, method",
    [
        (None, "S256"),  # PKCE is required
        (None, None),
        (RFC7636_CHALLENGE, None),  # absent method means plain (RFC 7636 §4.3)
        (RFC7636_CHALLENGE, "plain"),  # refused (OAuth 2.1 §4.1.1)
        (RFC7636_CHALLENGE, "s256"),  # method names are case-sensitive
        (RFC7636_CHALLENGE, "S512"),
        (RFC7636_CHALLENGE, ""),
        (RFC7636_CHALLENGE[:-1], "S256"),  # 42 characters
        (RFC7636_CHALLENGE + "A", "S256"),  # 44 characters
        (RFC7636_CHALLENGE[:-1] + "=", "S256"),  # padding
        (RFC7636_CHALLENGE[:-1] + "+", "S256"),  # plain base64, not base64url
        (RFC7636_CHALLENGE[:-1] + "/", "S256"),
        (RFC7636_CHALLENGE[:-1] + "\n", "S256"),
        (RFC7636_CHALLENGE + "\n", "S256"),
        ("", "S256"),
        (RFC7636_VERIFIER + "x" * 20, "S256"),  # a verifier-looking plain value
        (RFC7636_CHALLENGE[:-1] + "é", "S256"),
    ],
)
def test_challenge_refused(challenge, method):
    with pytest.raises(InvalidRequest):
        pkce.check_challenge(challenge, method)


@pytest.mark.parametrize(
    "verifier, error",
    [
        (None, InvalidRequest),
        ("a" * 42, InvalidGrant),  # too short (RFC 7636 §4.1: 43-128)
        ("a" * 129, InvalidGrant),  # too long
        ("a" * 42 + "!", InvalidGrant),
        ("a" * 42 + "+", InvalidGrant),
        ("a" * 42 + "/", InvalidGrant),
        ("a" * 42 + "=", InvalidGrant),
        ("a" * 42 + " ", InvalidGrant),
        ("a" * 43 + "\n", InvalidGrant),
        ("a" * 42 + "é", InvalidGrant),
        ("a" * 42 + "\x00", InvalidGrant),
        ("a" * 42 + "٣", InvalidGrant),  # a non-ASCII digit
        (RFC7636_VERIFIER[:-1] + "l", InvalidGrant),  # well-formed, wrong
        (RFC7636_CHALLENGE, InvalidGrant),  # the challenge itself (plain downgrade)
    ],
)
def test_verifier_refused(verifier, error):
    with pytest.raises(error):
        pkce.check_verifier(verifier, RFC7636_CHALLENGE)


def test_verifier_compared_in_constant_time(monkeypatch):
    calls = []
    real = pkce.hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("mcp_oauth_proxy.core.pkce.hmac.compare_digest", recording)
    pkce.check_verifier(RFC7636_VERIFIER, RFC7636_CHALLENGE)
    with pytest.raises(InvalidGrant):
        pkce.check_verifier("b" * 43, RFC7636_CHALLENGE)
    assert calls == [(RFC7636_CHALLENGE, RFC7636_CHALLENGE), (pkce.s256("b" * 43), RFC7636_CHALLENGE)]


# -- scopes (RFC 6749 §3.3) --------------------------------------------------------

@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ()),
        ("mcp", ("mcp",)),
        ("mcp mcp:admin", ("mcp", "mcp:admin")),
        ("mcp mcp mcp:admin mcp", ("mcp", "mcp:admin")),  # deduplicated, order kept
        ("b a", ("b", "a")),
        ("!#[]~", ("!#[]~",)),  # every allowed punctuation class
        ("https://example.com/scope", ("https://example.com/scope",)),
    ],
)
def test_parse_scope(value, expected):
    assert parse_scope(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", " ", "a  b", " a", "a ", "a\tb", "a\nb", 'a"b', "a\\b", "é", "a\x00", "a\x7f", "a\u00a0b"],
)
def test_parse_scope_malformed(value):
    with pytest.raises(InvalidScope):
        parse_scope(value)


@pytest.mark.parametrize(
    "requested, allowed, default, expected",
    [
        ((), ("mcp", "admin"), ("mcp",), ("mcp",)),  # nothing asked: the default
        (("mcp",), ("mcp", "admin"), ("mcp",), ("mcp",)),
        (("admin", "mcp"), ("mcp", "admin"), ("mcp",), ("admin", "mcp")),
    ],
)
def test_choose_scope(requested, allowed, default, expected):
    assert choose_scope(requested, allowed, default) == expected


@pytest.mark.parametrize("requested", [("other",), ("mcp", "other"), ("MCP",), ("mcp:",)])
def test_choose_scope_refuses_unknown(requested):
    with pytest.raises(InvalidScope):
        choose_scope(requested, ("mcp", "admin"), ("mcp",))


# -- resources (RFC 8707) ----------------------------------------------------------

OURS = "https://acme.example.com/mcp"


@pytest.mark.parametrize(
    "value",
    [
        "https://acme.example.com/mcp",
        "HTTPS://ACME.EXAMPLE.COM/mcp",  # scheme and host case-insensitive (RFC 3986 §6.2.2.1)
        "https://Acme.Example.Com/mcp",
        "https://acme.example.com/mcp/",  # trailing slash tolerated
        "https://acme.example.com:443/mcp",  # default port dropped (RFC 3986 §6.2.3)
        "https://acme.example.com:443/mcp/",
    ],
)
def test_normalize_resource_equal(value):
    assert normalize_resource(value) == normalize_resource(OURS) == "https://acme.example.com/mcp"


@pytest.mark.parametrize(
    "value",
    [
        "https://acme.example.com/MCP",  # path is case-sensitive
        "https://acme.example.com/mcp/x",
        "https://acme.example.com/mc",
        "https://acme.example.com/mcp?x=1",
        "https://acme.example.com:8443/mcp",
        "http://acme.example.com/mcp",
        "https://evil.example.com/mcp",
        "https://acme.example.com.evil.example/mcp",
        "https://acme.example.com/mcp//",  # only a lone trailing slash is tolerated
        "https://acme.example.com",
    ],
)
def test_normalize_resource_different(value):
    assert normalize_resource(value) is not None
    assert normalize_resource(value) != normalize_resource(OURS)


@pytest.mark.parametrize(
    "value",
    [
        "https://acme.example.com/mcp#frag",  # RFC 8707 §2: no fragment
        "https://acme.example.com/mcp#",
        "/mcp",  # RFC 8707 §2: absolute
        "mcp",
        "//acme.example.com/mcp",
        "",
        "https:///mcp",
        "https://acme.example.com:99999/mcp",
        "https://acme.example.com:x/mcp",
        "urn:example:mcp",  # no host
        # RFC 9110 §4.2.4: user info in an http(s) URI is to be treated as an
        # error; dropped, it let "x@" pass for our resource (found by a review).
        "https://x@acme.example.com/mcp",
        "https://x:y@acme.example.com/mcp",
        "https://@acme.example.com/mcp",
    ],
)
def test_normalize_resource_not_a_resource(value):
    assert normalize_resource(value) is None


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com:8080/a/", "http://example.com:8080/a"),
        ("https://[::1]:443/a", "https://[::1]/a"),
        ("https://[::1]:8443/a", "https://[::1]:8443/a"),
        ("https://example.com/", "https://example.com"),
    ],
)
def test_normalize_resource_forms(uri, expected):
    assert normalize_resource(uri) == expected


@pytest.mark.parametrize(
    "values",
    [None, [], [""], [OURS], ["HTTPS://ACME.example.com/mcp/"], [OURS, "https://acme.example.com:443/mcp"]],
)
def test_check_resource_ours(values):
    # Absent means ours; the configured string is what tokens are bound to.
    assert check_resource(values, OURS) == OURS


@pytest.mark.parametrize(
    "values",
    [
        ["https://other.example.com/mcp"],
        ["https://acme.example.com/other"],
        [OURS, "https://other.example.com/mcp"],  # every one must be ours
        ["https://acme.example.com/mcp#x"],
        ["/mcp"],
        ["not a uri"],
    ],
)
def test_check_resource_invalid_target(values):
    with pytest.raises(InvalidTarget) as info:
        check_resource(values, OURS)
    assert info.value.error == "invalid_target"


# -- tenancy: picking the tenant of a request --------------------------------------

ACME = tenant("acme", "https://acme.example.com", "https://acme.example.com/mcp")
PATH_ACME = tenant("p-acme", "https://auth.example.com/acme", "https://auth.example.com/acme/mcp")
PATH_GLOBEX = tenant("p-globex", "https://auth.example.com/globex", "https://auth.example.com/globex/mcp")
SPLIT = tenant("split", "https://login.split.example", "https://mcp.split.example/v1/mcp")
PORTED = tenant("ported", "https://dev.example.com:8443", "https://dev.example.com:8443/mcp")
LOCAL = tenant("local", "http://localhost:8000", "http://localhost:8000/mcp")
TENANTS = [ACME, PATH_ACME, PATH_GLOBEX, SPLIT, PORTED, LOCAL]


@pytest.mark.parametrize(
    "host, path, scheme, expected",
    [
        # by host, whatever the case and default port
        ("acme.example.com", "/oauth/token", "https", ACME),
        ("ACME.Example.COM", "/oauth/token", "https", ACME),
        ("acme.example.com:443", "/oauth/token", "https", ACME),
        ("acme.example.com", "/.well-known/oauth-authorization-server", "https", ACME),
        ("acme.example.com", "/mcp", "https", ACME),
        ("acme.example.com:8443", "/oauth/token", "https", None),  # another port is another origin
        ("acme.example.com:80", "/oauth/token", "https", None),
        ("dev.example.com:8443", "/oauth/token", "https", PORTED),
        ("dev.example.com", "/oauth/token", "https", None),
        ("localhost:8000", "/oauth/token", "http", LOCAL),
        ("localhost", "/oauth/token", "http", None),
        # by issuer path prefix
        ("auth.example.com", "/acme/oauth/token", "https", PATH_ACME),
        ("auth.example.com", "/globex/oauth/token", "https", PATH_GLOBEX),
        ("auth.example.com", "/acme", "https", PATH_ACME),
        ("auth.example.com", "/acme/mcp", "https", PATH_ACME),
        ("auth.example.com", "/acmecorp/oauth/token", "https", None),  # a prefix ends at a slash
        ("auth.example.com", "/oauth/token", "https", None),
        ("auth.example.com", "/", "https", None),
        # RFC 8414 §3.1 path insertion; OIDC path appending
        ("auth.example.com", "/.well-known/oauth-authorization-server/acme", "https", PATH_ACME),
        ("auth.example.com", "/.well-known/oauth-authorization-server/globex", "https", PATH_GLOBEX),
        ("auth.example.com", "/.well-known/openid-configuration/globex", "https", PATH_GLOBEX),
        ("auth.example.com", "/globex/.well-known/openid-configuration", "https", PATH_GLOBEX),
        # RFC 9728 §3.1 path insertion for the resource
        ("auth.example.com", "/.well-known/oauth-protected-resource/acme/mcp", "https", PATH_ACME),
        ("auth.example.com", "/.well-known/oauth-protected-resource/globex/mcp", "https", PATH_GLOBEX),
        ("auth.example.com", "/.well-known/oauth-authorization-server/acmecorp", "https", None),
        ("auth.example.com", "/.well-known/oauth-authorization-server", "https", None),
        # the resource on another host than the issuer
        ("mcp.split.example", "/v1/mcp", "https", SPLIT),
        ("mcp.split.example", "/.well-known/oauth-protected-resource/v1/mcp", "https", SPLIT),
        ("login.split.example", "/oauth/authorize", "https", SPLIT),
        # unknown hosts
        ("unknown.example.com", "/oauth/token", "https", None),
        ("", "/oauth/token", "https", None),
        ("acme.example.com.evil.example", "/oauth/token", "https", None),
        ("evil.example", "/acme/oauth/token", "https", None),
    ],
)
def test_pick_tenant(host, path, scheme, expected):
    assert pick_tenant(TENANTS, host, path, scheme) is expected


@pytest.mark.parametrize(
    "host, scheme, expected",
    [
        ("Example.COM", "https", "example.com"),
        ("example.com:443", "https", "example.com"),
        ("example.com:443", "http", "example.com:443"),
        ("example.com:80", "http", "example.com"),
        ("example.com:8080", "https", "example.com:8080"),
        ("[::1]", "https", "[::1]"),
        ("[::1]:443", "https", "[::1]"),
        ("[::1]:8443", "https", "[::1]:8443"),
        (" example.com ", "https", "example.com"),
    ],
)
def test_normalize_host(host, scheme, expected):
    assert normalize_host(host, scheme) == expected


# -- http: parameters, forms, cookies, redirects ----------------------------------

@pytest.mark.parametrize(
    "raw, expected",
    [
        ("", {}),
        ("a=1&b=2", {"a": ["1"], "b": ["2"]}),
        ("a=", {"a": [""]}),
        ("a", {"a": [""]}),
        ("a=x+y%20z", {"a": ["x y z"]}),
        ("a=%C3%A9", {"a": ["é"]}),
        ("a=1;b=2", {"a": ["1;b=2"]}),  # only & separates (no ; since Python 3.10)
        # RFC 8707 §2: resource may repeat
        ("resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb", {"resource": ["https://a", "https://b"]}),
    ],
)
def test_parse_params(raw, expected):
    assert parse_params(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "a=1&a=2",  # RFC 6749 §3.1: parameters MUST NOT be repeated
        "a=1&a=1",
        "a=&a=1",
        "a=1&%61=2",  # the same name, encoded differently
        "state=x&state=y",
        "a=%00",  # NUL
        "a%00=1",
        "a=x%00y",
        "a=%FF",  # invalid UTF-8 percent-encoding
        "a=%C3",
        "a=%ED%A0%80",  # an encoded surrogate is not UTF-8
        "%FF=1",
    ],
)
def test_parse_params_refused(raw):
    with pytest.raises(InvalidRequest):
        parse_params(raw)


def test_empty_value_is_absent():
    # RFC 6749 §3.1: a parameter without a value is treated as omitted.
    params = parse_params("a=&b=1")
    assert single(params, "a") is None
    assert single(params, "b") == "1"
    assert single(params, "c") is None
    with pytest.raises(InvalidRequest):
        required(params, "a")
    assert required(params, "b") == "1"


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "content_type",
    [FORM, FORM + "; charset=utf-8", FORM + ";charset=UTF-8", "Application/X-WWW-Form-URLEncoded", f" {FORM} "],
)
def test_form_params_content_type_accepted(content_type):
    request = Request("POST", "/oauth/token", headers=(("Content-Type", content_type),), body=b"a=1")
    assert form_params(request) == {"a": ["1"]}


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("content-type", "application/json"),),
        (("content-type", "text/plain"),),
        (("content-type", "multipart/form-data; boundary=x"),),
        (("content-type", ""),),
        (("content-type", FORM + "x"),),
        (("content-type", FORM), ("content-type", "text/plain")),  # two values joined
    ],
)
def test_form_params_content_type_refused(headers):
    # RFC 6749 §3.2: the token endpoint takes application/x-www-form-urlencoded.
    with pytest.raises(InvalidRequest):
        form_params(Request("POST", "/oauth/token", headers=headers, body=b"a=1"))


@pytest.mark.parametrize("body", [b"a=\xff", b"\xc3", b"a=1&a=2", b"a=%00"])
def test_form_params_body_refused(body):
    with pytest.raises(InvalidRequest):
        form_params(Request("POST", "/oauth/token", headers=(("content-type", FORM),), body=body))


@pytest.mark.parametrize(
    "headers, expected",
    [
        ((), {}),
        ((("cookie", "a=1"),), {"a": "1"}),
        ((("Cookie", "a=1; b=2"),), {"a": "1", "b": "2"}),
        ((("cookie", "a=1;b=2;"),), {"a": "1", "b": "2"}),
        ((("cookie", 'a="quoted"'),), {"a": "quoted"}),
        ((("cookie", "a=1; a=2"),), {"a": "1"}),  # first wins
        ((("cookie", "a=1"), ("cookie", "a=2; b=3")), {"a": "1", "b": "3"}),
        ((("cookie", "junk; =x; b=; c=v=w"),), {"b": "", "c": "v=w"}),
        ((("set-cookie", "a=1"),), {}),
    ],
)
def test_request_cookies(headers, expected):
    assert Request("GET", "/", headers=headers).cookies() == expected


def test_request_headers_case_insensitive_and_joined():
    request = Request("GET", "/", headers=(("X-A", "1"), ("x-a", "2"), ("Other", "3")))
    assert request.header("x-a") == "1, 2"  # RFC 9110 §5.3
    assert request.header("OTHER") == "3"
    assert request.header("missing") is None


@pytest.mark.parametrize(
    "url, params, expected",
    [
        ("https://c.example/cb", {"code": "a b", "state": None}, "https://c.example/cb?code=a+b"),
        # RFC 6749 §3.1.2: the redirect URI's own query is kept
        ("https://c.example/cb?x=1", {"code": "c"}, "https://c.example/cb?x=1&code=c"),
        ("https://c.example/cb?x=1&y=2", {"code": "c", "iss": "https://i/"},
         "https://c.example/cb?x=1&y=2&code=c&iss=https%3A%2F%2Fi%2F"),
        ("https://c.example/cb", {"state": None}, "https://c.example/cb"),
        ("com.example.app:/cb", {"code": "&=?#"}, "com.example.app:/cb?code=%26%3D%3F%23"),
    ],
)
def test_add_query(url, params, expected):
    assert add_query(url, params) == expected


def test_token_hash_is_sha256_hex():
    from mcp_oauth_proxy.core.context import token_hash

    assert token_hash("abc") == hashlib.sha256(b"abc").hexdigest()


def test_check_resource_refuses_every_resource_when_its_own_is_none():
    # Never "None == None": a tenant resource that is no resource matches nothing.
    with pytest.raises(InvalidTarget):
        check_resource(["urn:x"], "urn:example")
