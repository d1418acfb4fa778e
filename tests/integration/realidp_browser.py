"""A person at a browser, without a browser: follow redirects and submit the
HTML forms on the way (our consent page, the identity provider's login and
consent pages) until the authorization server sends the browser to the
client's redirect URI.

The walk is written once as a generator of steps; ``walk_sync`` and
``walk_async`` run it with an ``httpx.Client`` or ``httpx.AsyncClient`` (which
keep the cookies of every host they visit).
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any, Generator
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import attrs
import httpx

MAX_STEPS = 20
FORM = {"content-type": "application/x-www-form-urlencoded"}


@attrs.define
class Form:
    action: str
    method: str
    fields: dict[str, str] = attrs.Factory(dict)
    # (name, value) of each submit button
    buttons: list[tuple[str, str]] = attrs.Factory(list)
    password_fields: list[str] = attrs.Factory(list)
    text_fields: list[str] = attrs.Factory(list)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attributes}
        if tag == "form":
            self._current = Form(action=a.get("action", ""), method=(a.get("method") or "get").upper())
            self.forms.append(self._current)
        elif self._current is None:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            name = a.get("name")
            if not name:
                return
            if kind == "password":
                self._current.password_fields.append(name)
            elif kind in ("text", "email"):
                self._current.text_fields.append(name)
            elif kind == "submit":
                self._current.buttons.append((name, a.get("value", "")))
            else:
                self._current.fields[name] = a.get("value", "")
        elif tag == "button" and a.get("name"):
            self._current.buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms_of(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


@attrs.define
class Person:
    username: str
    password: str
    # Which button to press on our consent page.
    decision: str = "approve"


@attrs.define
class Visit:
    """What the walk saw, for assertions."""

    method: str
    url: str
    status: int


@attrs.define
class Walk:
    visits: list[Visit] = attrs.Factory(list)
    pages: list[str] = attrs.Factory(list)


Step = Generator[httpx.Request, httpx.Response, str]


def _submit(form: Form, page_url: str, person: Person) -> tuple[str, str, dict[str, str]]:
    data = dict(form.fields)
    if form.password_fields:
        user_field = form.text_fields[0] if form.text_fields else "username"
        data[user_field] = person.username
        data[form.password_fields[0]] = person.password
    elif "name" in form.text_fields:  # the development identity provider asks for a name only
        data["name"] = person.username
    decisions = [b for b in form.buttons if b[0] == "decision"]
    if decisions:
        chosen = [b for b in decisions if b[1] == person.decision]
        assert chosen, f"no {person.decision!r} button on {page_url}"
        data["decision"] = chosen[0][1]
    return form.method, urljoin(page_url, form.action), data


def _choose_form(html: str, page_url: str) -> Form:
    forms = forms_of(html)
    assert forms, f"a page with no form and no redirect at {page_url}:\n{html[:2000]}"
    # Prefer the login form, then our consent form, then the first one (the
    # identity provider's "Continue"; its "Cancel" form comes second).
    for form in forms:
        if form.password_fields or "name" in form.text_fields:
            return form
    for form in forms:
        if any(name == "decision" for name, _ in form.buttons):
            return form
    return forms[0]


def steps(start_url: str, redirect_uri: str, person: Person, walk: Walk) -> Step:
    """Yield requests to send and receive their responses; return the URL the
    browser was finally sent to (starting with ``redirect_uri``)."""
    request = httpx.Request("GET", start_url)
    for _ in range(MAX_STEPS):
        response = yield request
        url = str(request.url)
        walk.visits.append(Visit(request.method, url, response.status_code))
        if response.status_code in (301, 302, 303, 307, 308):
            location = urljoin(url, response.headers["location"])
            if location.startswith(redirect_uri):
                return location
            method = request.method if response.status_code in (307, 308) else "GET"
            assert method == "GET", f"a {response.status_code} redirect of a POST at {url}"
            request = httpx.Request("GET", location)
            continue
        assert response.status_code == 200, f"{request.method} {url} -> {response.status_code}:\n{response.text[:3000]}"
        assert response.headers.get("content-type", "").startswith("text/html"), response.headers
        walk.pages.append(response.text)
        method, action, data = _submit(_choose_form(response.text, url), person=person, page_url=url)
        if method == "POST":
            request = httpx.Request("POST", action, content=urlencode(data).encode(), headers=FORM)
        else:
            request = httpx.Request("GET", action, params=data)
    raise AssertionError(f"no redirect to the client after {MAX_STEPS} steps: {walk.visits}")


def walk_sync(client: httpx.Client, start_url: str, redirect_uri: str, person: Person,
              walk: Walk | None = None) -> dict[str, str]:
    """The query parameters the client's redirect URI receives."""
    walk = walk if walk is not None else Walk()
    gen = steps(start_url, redirect_uri, person, walk)
    request = next(gen)
    try:
        while True:
            response = client.send(client.build_request(request.method, request.url, content=request.content,
                                                        headers=_form_headers(request)))
            request = gen.send(response)
    except StopIteration as stop:
        return params_of(stop.value)


async def walk_async(client: httpx.AsyncClient, start_url: str, redirect_uri: str, person: Person,
                     walk: Walk | None = None) -> dict[str, str]:
    walk = walk if walk is not None else Walk()
    gen = steps(start_url, redirect_uri, person, walk)
    request = next(gen)
    try:
        while True:
            response = await client.send(client.build_request(request.method, request.url, content=request.content,
                                                              headers=_form_headers(request)))
            request = gen.send(response)
    except StopIteration as stop:
        return params_of(stop.value)


def _form_headers(request: httpx.Request) -> dict[str, Any]:
    return FORM if request.method == "POST" else {}


def params_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
