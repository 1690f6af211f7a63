"""The console's Adoption page (PRODUCT §6.3, §14), in-process over HTTP: candidates captured in
the store are listed; a viewer gets no adopt form and a forged adopt is refused; an editor adopts
a candidate and the new prompt's page shows it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from litestar.testing import TestClient

from gateway.api.app import create_app
from gateway.core.capture import CallShape, sighting
from gateway.settings import load
from gateway.stores.sqlite import SQLiteStore

TOKENS = {
    "editor": "editor-adopt-token-0123456789",
    "viewer": "viewer-adopt-token-0123456789",
}
TEXT = "You are the assistant of Acme. The customer is {name}, on the {plan} plan. Be brief."
T0 = datetime(2025, 1, 1, tzinfo=UTC)


async def capture(path: Path) -> None:
    store = SQLiteStore(path)
    shape = CallShape("mock-model", 0.2, None)
    batch = [
        sighting("system", TEXT.format(name=n, plan=p), shape, T0 + timedelta(minutes=i))
        for i, (n, p) in enumerate([("Ada", "Pro"), ("Bob", "Free"), ("Cy", "Team")])
    ]
    await store.record_captures(batch, limit=100)
    await store.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[object]:
    path = tmp_path / "gateway.db"
    asyncio.run(capture(path))
    (tmp_path / "none.yaml").write_text("")
    settings = load(
        None,
        {
            "GATEWAY_CONFIG": str(tmp_path / "none.yaml"),
            "GATEWAY_UPSTREAM_URL": "mock",
            "GATEWAY_ADMIN_TOKENS": ",".join(f"{r}-person:{r}:{t}" for r, t in TOKENS.items()),
            "GATEWAY_SNAPSHOT_PATH": str(tmp_path / "snapshot.json"),
        },
    )
    yield create_app(settings, store=SQLiteStore(path))


def sign_in(client: TestClient, role: str) -> str:  # type: ignore[type-arg]
    """Sign in as `role`; the session's CSRF token."""
    form = client.get("/ui/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    signed = client.post("/ui/sign-in", data={"csrf": csrf[1], "token": TOKENS[role]})
    assert signed.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/adoption").text)
    assert found is not None
    return found[1]


class Controls(HTMLParser):
    """The page's h1 count, its form controls' ids and the ids its labels name."""

    def __init__(self) -> None:
        super().__init__()
        self.h1 = 0
        self.controls: list[str | None] = []
        self.labelled: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "h1":
            self.h1 += 1
        elif tag == "label" and a.get("for"):
            self.labelled.add(str(a["for"]))
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a.get("id"))


def candidate_id(html: str) -> str:
    found = re.search(r'name="candidate" value="([^"]+)"', html)
    assert found is not None, html
    return found[1]


def test_the_console_lists_candidates_and_a_viewer_cannot_adopt(app: object) -> None:
    with TestClient(app=app) as client:  # type: ignore[arg-type]
        csrf = sign_in(client, "viewer")
        page = client.get("/ui/adoption")
        assert page.status_code == 200
        html = page.text
        assert '<a href="/ui/adoption">Adoption</a>' in html
        assert "{{var1}}" in html and "{{var2}}" in html  # the template
        assert "Ada" in html or "Bob" in html or "Cy" in html  # an example of the values
        assert "adoptable" in html
        assert 'action="/ui/adoption/adopt"' not in html
        ids = re.findall(r'<h2 id="candidate-([^"]+)"', html)
        assert len(ids) == 1
        forged = client.post(
            "/ui/adoption/adopt",
            data={"csrf": csrf, "candidate": ids[0], "name": "forged"},
            follow_redirects=False,
        )
        assert forged.status_code == 403
        assert client.get("/ui/prompts/forged").status_code == 404


def test_an_editor_adopts_a_candidate_and_the_prompt_appears(app: object) -> None:
    with TestClient(app=app) as client:  # type: ignore[arg-type]
        csrf = sign_in(client, "editor")
        html = client.get("/ui/adoption").text
        parsed = Controls()
        parsed.feed(html)
        assert parsed.h1 == 1
        assert parsed.controls and all(c in parsed.labelled for c in parsed.controls)
        candidate = candidate_id(html)

        no_token = client.post(
            "/ui/adoption/adopt", data={"candidate": candidate, "name": "acme-support"}
        )
        assert no_token.status_code == 403

        bad = client.post(
            "/ui/adoption/adopt",
            data={"csrf": csrf, "candidate": candidate, "name": "Not A Name"},
        )
        assert bad.status_code == 400
        assert 'role="alert"' in bad.text

        adopted = client.post(
            "/ui/adoption/adopt",
            data={
                "csrf": csrf,
                "candidate": candidate,
                "name": "acme-support",
                "var.var1": "customer",
                "var.var2": "plan",
            },
            follow_redirects=False,
        )
        assert adopted.status_code == 303, adopted.text
        assert adopted.headers["location"] == "/ui/prompts/acme-support"
        prompt = client.get(adopted.headers["location"])
        assert prompt.status_code == 200
        assert "Adopted as acme-support 1.0.0" in prompt.text
        assert 'name="var.customer"' in prompt.text  # the renamed variable

        listed = client.get("/ui/adoption").text
        assert '<a href="/ui/prompts/acme-support">acme-support</a>' in listed
        assert 'action="/ui/adoption/adopt"' not in listed  # adopted: no longer adoptable

        again = client.post(
            "/ui/adoption/adopt",
            data={"csrf": csrf, "candidate": candidate, "name": "acme-again"},
        )
        assert again.status_code == 409
        assert "acme-support" in again.text
