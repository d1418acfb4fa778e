"""Rate limits anyone can spend for everyone: every user of one MCP client
application shares its client_id (with metadata documents always; a public
client needs no secret), so a limit counted by client_id alone lets one
party lock all the others out. With the default limits, one address or one
grant spending its budget must leave another address, and another grant of
the same client, untouched."""

from __future__ import annotations

import pytest

from support import Harness
from mcp_oauth_proxy.core.requesters import requester_key


def _refresh(h: Harness, client_id: str, refresh_token: str):
    return h.token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id})


def test_one_address_spending_a_clients_authorize_budget_does_not_lock_out_another_address():
    h = Harness()
    client = h.register()
    h.remote_addr = "198.51.100.66"  # the attacker, using the public client_id
    answers = [h.request("GET", h.authorize_url(client["client_id"])).status for _ in range(100)]
    assert 429 in answers  # limited at its own address
    h.remote_addr = "203.0.113.7"  # a person using the same application elsewhere
    assert h.request("GET", h.authorize_url(client["client_id"])).status == 200


def test_one_address_spending_a_clients_token_budget_does_not_lock_out_another_address():
    h = Harness()
    client = h.register()
    h.remote_addr = "203.0.113.7"
    code = h.login(client["client_id"])["code"]
    h.remote_addr = "198.51.100.66"
    answers = [h.redeem(client["client_id"], f"guessed-{i}").status for i in range(200)]
    assert 429 in answers
    h.remote_addr = "203.0.113.7"
    assert h.redeem(client["client_id"], code).status == 200


def test_refreshing_one_grant_does_not_lock_out_another_grant_of_the_same_client():
    h = Harness()
    h.remote_addr = "203.0.113.7"
    client, mine = h.tokens()
    theirs = h.redeem(client["client_id"], h.login(client["client_id"])["code"]).json()
    # The finding: 150 sequential refreshes of one grant by one client.
    token, answers = theirs["refresh_token"], []
    for _ in range(150):
        answer = _refresh(h, client["client_id"], token)
        answers.append(answer.status)
        if answer.status == 200:
            token = answer.json()["refresh_token"]
    assert 429 in answers  # that grant is limited...
    assert _refresh(h, client["client_id"], mine["refresh_token"]).status == 200  # ...this one is not


# -- one host, many spellings of its address ------------------------------------


@pytest.mark.parametrize("address, key", [
    ("203.0.113.7", "203.0.113.7"), ("203.0.113.7:4242", "203.0.113.7"), (" 203.0.113.7 ", "203.0.113.7"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"), ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("[2001:db8:1:2::7]:443", "2001:db8:1:2::/64"), ("[2001:db8:1:2::7]", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"), ("::ffff:203.0.113.7", "203.0.113.7"), ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
    ("unknown", "unknown"), ("x" * 500, "x" * 100),
])
def test_an_address_is_counted_as_the_host_that_holds_it(address: str, key: str) -> None:
    assert requester_key(address) == key


def test_one_ipv6_host_cannot_register_past_its_limit_by_changing_address():
    h = Harness()
    answers = []
    for i in range(40):
        h.remote_addr = f"2001:db8:1:2::{i + 1:x}"  # a host picks any address in its /64
        answers.append(h.request("POST", f"{h.tenant.issuer}/oauth/register", json_body={
            "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}).status)
    assert 429 in answers
    h.remote_addr = "2001:db8:1:3::1"  # the next /64 is someone else
    assert h.request("POST", f"{h.tenant.issuer}/oauth/register", json_body={
        "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}).status == 201


def test_a_port_in_the_forwarded_address_does_not_make_a_new_requester():
    h = Harness()
    answers = []
    for i in range(40):
        h.remote_addr = f"198.51.100.66:{1000 + i}"  # as a proxy may write it in X-Forwarded-For
        answers.append(h.request("POST", f"{h.tenant.issuer}/oauth/register", json_body={
            "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}).status)
    assert 429 in answers
