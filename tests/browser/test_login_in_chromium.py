"""The whole browser side of a login in a real Chromium, against a real
``serve`` process: the consent page clicked, the identity provider's
redirects followed, the callback reached with the browser's own cookies
(SameSite=Lax, across sites). And the attack the browser binding stops:
a login link that one person's consent produced, opened in another
person's browser, ends on our refusal page, never at the client."""

from __future__ import annotations

from login_world import World


def _upstream_urls_of(context: object, world: World) -> list[str]:
    """Hold every redirect of ours to the identity provider, keeping its URL
    (Playwright cannot intercept a redirect's target, so our answers are
    fetched in the browser's name, its cookies kept, and replaced)."""
    held: list[str] = []

    def hold(route: object) -> None:
        answer = route.fetch(max_redirects=0)  # type: ignore[attr-defined]
        location = answer.headers.get("location", "")
        if not location.startswith(world.idp.url):
            route.fulfill(response=answer)  # type: ignore[attr-defined]
            return
        held.append(location)
        route.fulfill(status=200, content_type="text/html", body="<title>held</title>")  # type: ignore[attr-defined]

    context.route(f"{world.base}/oauth/**", hold)  # type: ignore[attr-defined]
    return held


def test_a_person_approves_signs_in_and_the_client_gets_its_code(world: World, chromium: object) -> None:
    context = chromium.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(world.authorize_url())
    assert "Browser Test Client" in page.content()
    page.click("button[value=approve]")
    assert world.code_at_client(page).startswith("mcp_code_")
    # A public client at a loopback redirect is asked again, approved before
    # or not: any program on this machine could be listening there (RFC 8252 §8.6).
    page.goto(world.authorize_url())
    assert "Browser Test Client" in page.content()
    page.click("button[value=approve]")
    assert world.code_at_client(page).startswith("mcp_code_")
    assert len(world.arrived) == 2
    # One that proves itself at the token endpoint, approved before, goes
    # straight through, still bound to this browser.
    world.client_id = world.register("Confidential Test Client", "client_secret_basic")
    page.goto(world.authorize_url())
    page.click("button[value=approve]")
    assert world.code_at_client(page).startswith("mcp_code_")
    page.goto(world.authorize_url())
    assert world.code_at_client(page).startswith("mcp_code_")
    assert len(world.arrived) == 4


def test_two_tabs_of_one_browser_both_finish(world: World, chromium: object) -> None:
    context = chromium.new_context()  # type: ignore[attr-defined]
    held = _upstream_urls_of(context, world)
    tabs = [context.new_page(), context.new_page()]
    for tab in tabs:
        tab.goto(world.authorize_url())
    for tab in tabs:  # both consent pages are up before either is answered
        tab.click("button[value=approve]")
        tab.wait_for_load_state()
    context.unroute(f"{world.base}/oauth/**")
    assert len(held) == 2
    for tab, upstream_url in zip(tabs, held):
        tab.goto(upstream_url)
        assert world.code_at_client(tab).startswith("mcp_code_")


def test_a_login_link_opened_in_another_browser_ends_on_our_refusal_page(world: World, chromium: object) -> None:
    attacker = chromium.new_context()  # type: ignore[attr-defined]
    held = _upstream_urls_of(attacker, world)
    page = attacker.new_page()
    page.goto(world.authorize_url())
    page.click("button[value=approve]")
    page.wait_for_load_state()
    assert len(held) == 1
    # The victim's browser opens the link; the identity provider signs them in.
    victim = chromium.new_context()  # type: ignore[attr-defined]
    lured = victim.new_page()
    answer = lured.goto(held[0])
    assert answer is not None and answer.status == 403
    assert lured.url.startswith(f"{world.base}/oauth/callback?")
    assert "another browser" in lured.inner_text("body")
    assert world.arrived == []
