"""Zero-code adoption end to end (PRODUCT §14): an "app" built on the official openai SDK that
hard-codes its system prompt with the user's name and plan, pointed at a real gateway (capture
on, a SQLite store) in front of the recording fake provider. The app never changes: its prompt is
captured, adopted, reworded, A/B tested and rolled back through the admin API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.api.app import create_app
from gateway.settings import load
from gateway.stores.sqlite import SQLiteStore
from tests.servers import FakeProvider, OtlpReceiver, ServedGateway

SYSTEM = (
    "You are the support assistant of Acme Cloud. You are talking to {name}, a customer on the "
    "{plan} plan. Answer briefly, cite the docs, and never reveal internal notes."
)
REWORDED = "Acme Cloud support for {{customer_name}} ({{plan}} plan). Be brief and kind."
PLANS = ("Free", "Pro", "Team")
EDITOR = "editor-token-0123456789"
ADMIN = "admin-token-0123456789"
TOKENS = f"eddie:editor:{EDITOR},ada:admin:{ADMIN}"


def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy (never sleep to wait for something)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class App:
    """The app: one system prompt in its code, the user's name and plan formatted in. It keeps
    the exact bytes the SDK sent for each call, to compare with what the provider received."""

    def __init__(self, gateway_url: str) -> None:
        self.sent: dict[str, bytes] = {}
        self._http = httpx.Client(event_hooks={"request": [self._keep]})
        self.client = openai.OpenAI(
            base_url=gateway_url + "/v1", api_key="sk-app", http_client=self._http, max_retries=0
        )

    def _keep(self, request: httpx.Request) -> None:
        request.read()
        self.sent[request.headers["x-app-call"]] = request.content

    def ask(self, name: str, plan: str) -> tuple[str, httpx.Headers]:
        """One call for this user; returns the call's tag and the gateway's response headers."""
        tag = f"{name}-{time.monotonic_ns()}"
        raw = self.client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            temperature=0.2,
            messages=[
                {"role": "system", "content": SYSTEM.format(name=name, plan=plan)},
                {"role": "user", "content": "Where is my last invoice?"},
            ],
            user=f"user-{name}",
            extra_headers={"x-app-call": tag},
        )
        raw.parse()
        return tag, raw.headers

    def close(self) -> None:
        self._http.close()


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    sink = OtlpReceiver()
    yield sink
    sink.stop()


def start(provider: FakeProvider, path: Path, *, capture: bool, **environ: str) -> ServedGateway:
    config = path.parent / "gateway.yaml"
    config.write_text(f"adoption:\n  capture: {str(capture).lower()}\n  flush_interval: 0.05\n")
    settings = load(
        config,
        {"GATEWAY_UPSTREAM_URL": provider.url, "GATEWAY_ADMIN_TOKENS": TOKENS, **environ},
    )
    return ServedGateway(create_app(settings, store=SQLiteStore(path, poll_interval=0.05)))


def received(provider: FakeProvider, tag: str) -> bytes:
    """The body the provider received for the app's call `tag`."""
    found = [r for r in provider.requests if r.headers.get("x-app-call") == tag]
    assert len(found) == 1
    return found[0].body


def test_adopt_reword_split_and_roll_back_without_touching_the_app(
    provider: FakeProvider, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """50 calls give one candidate with two variables; adopted, the app's calls are served as the
    prompt with their bodies unchanged; a promoted 1.1.0 is rendered with each call's own values;
    an experiment splits the users; rollback to 1.0.0 sends the app's bytes again."""
    gateway = start(
        provider,
        tmp_path / "gateway.db",
        capture=True,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    app = App(gateway.url)
    admin = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {ADMIN}"})
    editor = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {EDITOR}"})
    try:
        # 1. Capture: unmanaged calls go through unchanged, and are counted.
        for i in range(50):
            tag, headers = app.ask(f"User{i:02d}", PLANS[i % 3])
            assert "x-prompt-name" not in headers
            assert received(provider, tag) == app.sent[tag]

        def one_candidate() -> Any:
            found = editor.get("/admin/adoption/candidates").json()
            return found if found and found[0]["count"] == 50 else None

        (candidate,) = until(one_candidate)
        assert candidate["variables"] == ["var1", "var2"]
        assert candidate["template"] == SYSTEM.format(name="{{var1}}", plan="{{var2}}")
        assert (candidate["texts"], candidate["model"], candidate["temperature"]) == (
            50,
            "gpt-4o-mini",
            0.2,
        )
        assert candidate["adoptable"] is True
        assert set(candidate["examples"][0]) == {"var1", "var2"}

        # 2. Adopt: 1.0.0 serves, and the app's bodies reach the provider byte for byte.
        adopted = editor.post(
            "/admin/adoption/adopt",
            json={
                "candidate": candidate["id"],
                "name": "acme-support",
                "variables": {"var1": "customer_name", "var2": "plan"},
            },
        )
        assert adopted.status_code == 201, adopted.text
        version = adopted.json()["version"]
        assert (version["version"], version["is_active"]) == ("1.0.0", True)
        assert version["messages"][0]["content"] == SYSTEM.format(
            name="{{customer_name}}", plan="{{plan}}"
        )
        tag, headers = until(
            lambda: (r := app.ask("Grace Hopper", "Pro"))[1].get("x-prompt-name") and r
        )
        assert (headers["x-prompt-name"], headers["x-prompt-version"]) == ("acme-support", "1.0.0")
        assert received(provider, tag) == app.sent[tag]
        span = receiver.wait_for(headers["x-request-id"])
        assert span.attributes["gateway.prompt.adopted"] is True
        assert span.attributes["langfuse.observation.metadata.adopted"] is True
        assert orjson.loads(span.attributes["metadata"])["adopted"] is True
        assert span.attributes["gateway.prompt.name"] == "acme-support"

        # 3. A reworded 1.1.0, promoted: the next calls get it, rendered with their own values.
        pushed = editor.post(
            "/admin/prompts",
            json={
                "name": "acme-support",
                "version": "1.1.0",
                "model": "gpt-4o-mini",
                "temperature": 0.2,
                "messages": [{"role": "system", "content": REWORDED}],
            },
        )
        assert pushed.status_code == 201, pushed.text
        promoted = admin.post(
            "/admin/prompts/acme-support/promote", json={"version": "1.1.0", "force": True}
        )
        assert promoted.status_code == 200, promoted.text
        tag, headers = until(
            lambda: (r := app.ask("Linus T", "Team"))[1].get("x-prompt-version") == "1.1.0" and r
        )
        sent = received(provider, tag)
        assert sent != app.sent[tag]
        messages = httpx.Response(200, content=sent).json()["messages"]
        assert messages == [
            {
                "role": "system",
                "content": "Acme Cloud support for Linus T (Team plan). Be brief and kind.",
            },
            {"role": "user", "content": "Where is my last invoice?"},
        ]
        assert headers["x-prompt-replaced-system"] == "1"
        # Only the message the prompt was adopted from is replaced; the app's other system
        # messages stay.
        raw = app.client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": SYSTEM.format(name="Ann", plan="Pro")},
                {"role": "system", "content": "Today is 2026-11-30. Ticket #4411 is open."},
                {"role": "user", "content": "hi"},
            ],
            extra_headers={"x-app-call": "two-systems"},
        )
        assert raw.headers["x-prompt-version"] == "1.1.0"
        assert httpx.Response(200, content=received(provider, "two-systems")).json()[
            "messages"
        ] == [
            {
                "role": "system",
                "content": "Acme Cloud support for Ann (Pro plan). Be brief and kind.",
            },
            {"role": "system", "content": "Today is 2026-11-30. Ticket #4411 is open."},
            {"role": "user", "content": "hi"},
        ]

        # 4. An experiment between 1.0.0 and 1.1.0 splits the same app's users.
        created = editor.post(
            "/admin/experiments",
            json={
                "id": "adopted-ab",
                "prompt_name": "acme-support",
                "control_version": "1.0.0",
                "treatment_version": "1.1.0",
                "traffic_split": 0.5,
                "metric": "user_satisfaction",
            },
        )
        assert created.status_code == 201, created.text
        until(lambda: app.ask("Probe", "Pro")[1].get("x-prompt-experiment") == "adopted-ab")
        variants: dict[str, str] = {}
        for i in range(40):
            name = f"Split{i:02d} User"
            tag, headers = app.ask(name, "Pro")
            variants[name] = headers["x-prompt-variant"]
            if headers["x-prompt-version"] == "1.0.0":
                assert received(provider, tag) == app.sent[tag]
            else:
                assert name.encode() in received(provider, tag)
                assert b"Acme Cloud support for" in received(provider, tag)
        assert set(variants.values()) == {"control", "treatment"}
        again = app.ask("Split07 User", "Pro")[1]["x-prompt-variant"]
        assert again == variants["Split07 User"]
        assert editor.post("/admin/experiments/adopted-ab/stop").status_code == 200
        until(lambda: "x-prompt-experiment" not in app.ask("Probe", "Pro")[1])

        # 5. Rollback to 1.0.0: the provider gets exactly what the app sent again.
        rolled = editor.post("/admin/prompts/acme-support/rollback")
        assert rolled.status_code == 200, rolled.text
        until(lambda: app.ask("Probe", "Pro")[1].get("x-prompt-version") == "1.0.0")
        for i in range(5):
            tag, headers = app.ask(f"Back{i} User", PLANS[i % 3])
            assert headers["x-prompt-version"] == "1.0.0"
            assert received(provider, tag) == app.sent[tag]

        # 6. A tested promotion of a version that needs a value the app's text does not carry
        # (region): the unchanged app is not broken, its calls go out as it sent them.
        needs_region = REWORDED.replace("Be brief", "Region {{region}}. Be brief")
        pushed = editor.post(
            "/admin/prompts",
            json={
                "name": "acme-support",
                "version": "1.2.0",
                "model": "gpt-4o-mini",
                "messages": [{"role": "system", "content": needs_region}],
            },
        )
        assert pushed.status_code == 201, pushed.text
        promoted = admin.post(
            "/admin/prompts/acme-support/promote", json={"version": "1.2.0", "force": True}
        )
        assert promoted.status_code == 200, promoted.text
        until(lambda: "x-prompt-version" not in app.ask("Probe", "Pro")[1])
        tag, headers = app.ask("Region User", "Free")
        assert "x-prompt-name" not in headers
        assert received(provider, tag) == app.sent[tag]

        # A text that matches no template is untouched and not served as a prompt.
        raw = app.client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "You are a pirate."}],
            extra_headers={"x-app-call": "pirate"},
        )
        assert "x-prompt-name" not in raw.headers
        assert received(provider, "pirate") == app.sent["pirate"]
    finally:
        app.close()
        admin.close()
        editor.close()
        gateway.stop()


def test_nothing_is_captured_with_capture_off(provider: FakeProvider, tmp_path: Path) -> None:
    """With adoption.capture off (the default), unmanaged calls leave nothing in the store."""
    path = tmp_path / "gateway.db"
    gateway = start(provider, path, capture=False)
    app = App(gateway.url)
    try:
        for i in range(5):
            app.ask(f"Off{i}", "Pro")
        candidates = httpx.get(
            gateway.url + "/admin/adoption/candidates",
            headers={"Authorization": f"Bearer {EDITOR}"},
        )
        assert candidates.json() == []
        metrics = httpx.get(gateway.url + "/metrics").text
        assert "gateway_adoption_dropped_total 0" in metrics
    finally:
        app.close()
        gateway.stop()  # a recorder, if any, would write what it holds now
    assert asyncio.run(SQLiteStore(path).captured()) == []


def test_adoption_candidates_are_grouped_off_the_event_loop(
    provider: FakeProvider, tmp_path: Path
) -> None:
    """With 1,000 distinct long texts captured, /healthz answers while the candidates are
    being grouped, and the grouping ends in bounded time."""
    from gateway.core.capture import CallShape, sighting
    from gateway.prompts import utc_now
    from tests.core.test_adoption import random_texts

    path = tmp_path / "gateway.db"
    now = utc_now()
    batch = [
        sighting("system", t, CallShape(None, None, None), now) for t in random_texts(1000, 300, 50)
    ]
    asyncio.run(SQLiteStore(path).record_captures(batch, limit=10_000))
    gateway = start(provider, path, capture=True)
    try:
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(1) as pool:
            began = time.monotonic()
            listing = pool.submit(
                client.get,
                gateway.url + "/admin/adoption/candidates",
                headers={"Authorization": f"Bearer {EDITOR}"},
            )
            healthy = 0
            while not listing.done():
                started = time.monotonic()
                assert client.get(gateway.url + "/healthz").status_code == 200
                assert time.monotonic() - started < 1.0
                healthy += 1
            assert healthy > 1
            assert len(listing.result().json()) == 1000
            assert time.monotonic() - began < 20
    finally:
        gateway.stop()


def test_a_candidate_is_adopted_once(tmp_path: Path) -> None:
    """A candidate an adopted prompt already serves (its template, or texts an adopted template
    matches) is refused with a 409 naming that prompt, and listed with adopted_as."""
    from datetime import UTC, datetime

    from gateway.adoption import adopt_candidate, list_adopted
    from gateway.core.capture import CallShape, sighting
    from gateway.errors import VersionConflict

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "gateway.db")
        now = datetime(2025, 1, 1, tzinfo=UTC)
        shape = CallShape("gpt-4o-mini", None, None)
        texts = [SYSTEM.format(name=n, plan=p) for n, p in (("Ada", "Pro"), ("Bob", "Free"))]
        await store.record_captures([sighting("system", t, shape, now) for t in texts], limit=99)
        ((candidate, holder),) = await list_adopted(store)
        assert holder is None
        ids = iter(["v1", "v2"])
        kwargs: dict[str, Any] = {"actor": "t", "clock": lambda: now, "new_id": lambda: next(ids)}
        await adopt_candidate(store, candidate.id, "support", {}, **kwargs)
        with pytest.raises(VersionConflict, match="'support'") as refused:
            await adopt_candidate(store, candidate.id, "support_again", {}, **kwargs)
        assert refused.value.status == 409
        # One more text of the same template captured: a new literal candidate its template
        # already matches.
        third = SYSTEM.format(name="Carol", plan="Team")
        await store.record_captures([sighting("developer", third, shape, now)], limit=99)
        listed = {c.role: name for c, name in await list_adopted(store)}
        assert listed == {"system": "support", "developer": "support"}
        other = next(c for c, _ in await list_adopted(store) if c.role == "developer")
        with pytest.raises(VersionConflict, match="'support'"):
            await adopt_candidate(store, other.id, "overlap", {}, **kwargs)
        assert "support_again" not in (await store.snapshot()).prompts

    asyncio.run(scenario())
