"""Export and restore: a registry leaves one backend as JSON and comes back whole in another."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from gateway.core.model import TestResults as Results  # not a pytest class
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.core.resolution import Overrides, resolve
from gateway.errors import InvalidRequest, NoServableVersion, StoreNotEmpty
from gateway.files import ExperimentSpec
from gateway.prompts import PromptRegistry
from gateway.stores.backup import RegistryExport, dump_export, load_export
from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from gateway.stores.sqlite import SQLiteStore
from tests.factories import T0

Opener = Callable[[str], Store]


@pytest.fixture
def open_store(tmp_path: Path, request: pytest.FixtureRequest) -> Opener:
    """Open a fresh, empty store of a kind (`sqlite` or `redis`) for each call."""

    def opened(kind: str) -> Store:
        if kind == "sqlite":
            return SQLiteStore(tmp_path / f"{uuid.uuid4().hex[:8]}.db")
        url: str = request.getfixturevalue("redis_url")
        return RedisStore(url, prefix=f"backup-{uuid.uuid4().hex[:8]}:")

    return opened


@pytest.fixture
async def stores() -> AsyncIterator[list[Store]]:
    """Stores a test opened, closed after it."""
    opened: list[Store] = []
    yield opened
    for store in opened:
        await store.close()


def draft(name: str, ver: str, content: str = "You help {{company}}."):  # type: ignore[no-untyped-def]
    return make_draft(name=name, version=ver, messages=[Message("system", content)])


PASSING = Results(total=2, passed=2, failed=0, pass_rate=1.0, ran_at=T0)
FAILING = Results(total=2, passed=1, failed=1, pass_rate=0.5, ran_at=T0)


async def fill(store: Store) -> None:
    """A registry with everything an export must keep: tested and untested versions, a
    promotion, a forced one and a rollback, a stopped and a running experiment, and audit
    entries of two prompts interleaved."""
    registry = PromptRegistry(store, threshold=0.9, clock=lambda: T0)
    for ver in ("1.0.0", "1.1.0", "1.2.0"):
        await registry.create_version(draft("support", ver, f"v{ver} {{{{company}}}}"), actor="a")
        await registry.create_version(draft("triage", ver, f"t{ver}"), actor="b")
    await registry.record_test_run("support", "1.0.0", PASSING, actor="ci")
    await registry.record_test_run("support", "1.1.0", PASSING, actor="ci")
    await registry.record_test_run("support", "1.2.0", FAILING, actor="ci")
    await registry.promote("support", "1.0.0", actor="a")
    await registry.promote("support", "1.1.0", actor="a")
    await registry.promote("support", "1.2.0", actor="root", force=True)
    await registry.rollback("support", actor="a")
    await registry.promote("triage", "1.0.0", actor="b", force=True)
    spec = ExperimentSpec("old", "triage", "1.0.0", "1.1.0", 0.5)
    await registry.create_experiment(spec, actor="b")
    await registry.stop_experiment("old", actor="b")
    running = ExperimentSpec("tone", "support", "1.1.0", "1.0.0", 0.3, start=T0 - timedelta(days=1))
    await registry.create_experiment(running, actor="a")


def served(backup: RegistryExport) -> dict[tuple[str, str, str], tuple[str, str]]:
    """What each environment serves each of a few users of every prompt: (version, variant),
    or the error's code when nothing serves."""
    seen: dict[tuple[str, str, str], tuple[str, str]] = {}
    for name in backup.snapshot.prompts:
        for env in ("development", "staging", "production"):
            for user in ("u1", "u2", "u3", "u4", "u5"):
                try:
                    got = resolve(
                        backup.snapshot,
                        name,
                        environment=env,  # type: ignore[arg-type]
                        overrides=Overrides({}, {}),
                        user_key=user,
                        request_id="r",
                        now=T0,
                    )
                except NoServableVersion as exc:
                    seen[name, env, user] = (exc.code, "none")
                    continue
                seen[name, env, user] = (got.version.version, got.variant)
    return seen


@pytest.mark.parametrize(
    ("source", "target"),
    [("sqlite", "redis"), ("redis", "sqlite"), ("sqlite", "sqlite"), ("redis", "redis")],
)
async def test_a_registry_round_trips_through_an_export(
    source: str, target: str, open_store: Opener, stores: list[Store]
) -> None:
    """Export from one backend, write the JSON, restore into a fresh other: the same prompts,
    versions, tested marks, activations, experiments, audit (in order) and resolutions."""
    first, second = open_store(source), open_store(target)
    stores += [first, second]
    await fill(first)
    exported = await first.export()
    assert exported.counts() == {"prompts": 2, "versions": 6, "experiments": 2, "audit": 17}
    text = dump_export(exported, exported_at=T0)
    await second.restore(load_export(text, where="registry.json"))

    again = await second.export()
    assert dict(again.snapshot.prompts) == dict(exported.snapshot.prompts)
    assert again.audit == exported.audit
    assert int(again.snapshot.revision) == int(exported.snapshot.revision) + 1
    assert served(again) == served(exported)
    support = again.snapshot.prompts["support"]
    assert (support.active, support.history) == ("1.1.0", ("1.0.0",))
    assert [v.is_tested for v in support.versions] == [True, True, False]
    assert support.by_version["1.2.0"].test_results == FAILING
    assert {e.id: e.status for e in again.snapshot.prompts["triage"].experiments} == {
        "old": "stopped"
    }
    assert [e.action for e in await second.audit(prompt_name="triage", limit=3)] == [
        "version.promote",
        "experiment.create",
        "experiment.stop",
    ]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_restore_refuses_a_store_that_holds_a_registry(
    kind: str, open_store: Opener, stores: list[Store]
) -> None:
    """Restoring into a store with any prompt raises StoreNotEmpty and writes nothing."""
    first, second = open_store(kind), open_store(kind)
    stores += [first, second]
    await fill(first)
    await PromptRegistry(second, threshold=0.9).create_version(draft("other", "1.0.0"), actor="x")
    before = await second.export()
    with pytest.raises(StoreNotEmpty, match=r"is not empty \(.*restore writes only into an empty"):
        await second.restore(await first.export())
    after = await second.export()
    assert (after.snapshot, after.audit) == (before.snapshot, before.audit)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_an_empty_store_exports_an_empty_registry(
    kind: str, open_store: Opener, stores: list[Store]
) -> None:
    """An empty store's export holds nothing, and restoring it into an empty store is fine."""
    first, second = open_store(kind), open_store(kind)
    stores += [first, second]
    exported = await first.export()
    assert exported.is_empty
    await second.restore(exported)
    assert (await second.export()).is_empty


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "registry.json is not JSON"),
        (b"[]", "is not a prompt-gateway-registry file"),
        (b'{"format": "prompt-gateway-snapshot"}', "is not a prompt-gateway-registry file"),
        (
            b'{"format": "prompt-gateway-registry", "format_version": 9}',
            "has format_version 9; this gateway reads version 1",
        ),
        (
            b'{"format": "prompt-gateway-registry", "format_version": 1, "revision": "3"}',
            "is not a complete registry export: missing key 'prompts'",
        ),
    ],
)
def test_a_file_that_is_not_an_export_is_refused(raw: bytes, message: str) -> None:
    """Bad files raise InvalidRequest naming the file and what is wrong."""
    with pytest.raises(InvalidRequest, match=message):
        load_export(raw, where="registry.json")


def test_the_export_is_readable_json() -> None:
    """The export is an indented JSON object with its format, revision and lists."""
    from gateway.core.model import RegistrySnapshot

    doc = orjson.loads(dump_export(RegistryExport(RegistrySnapshot({}, "4")), exported_at=T0))
    assert doc == {
        "format": "prompt-gateway-registry",
        "format_version": 1,
        "revision": "4",
        "exported_at": T0.isoformat(),
        "prompts": [],
        "audit": [],
    }
