"""End-to-end fixtures: a fake provider, gateways served on loopback, a registry with prompts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.api.app import create_app
from gateway.core.registry import make_draft
from gateway.core.rendering import Message
from gateway.files import ExperimentSpec, load_prompt_files
from gateway.prompts import PromptRegistry
from gateway.settings import load
from gateway.stores.sqlite import SQLiteStore
from tests.conftest import ROOT
from tests.servers import FakeProvider, ServedGateway

MakeGateway = Callable[..., ServedGateway]


@pytest.fixture(scope="session")
def provider() -> Iterator[FakeProvider]:
    """One OpenAI-compatible fake provider for the session."""
    fake = FakeProvider()
    yield fake
    fake.stop()


INJECTION_PROMPTS = (
    make_draft(
        name="reasoning-agent",
        version="1.0.0",
        messages=[Message("system", "You reason for {{company}}.")],
        model="o3-mini",
        temperature=0.2,
        max_tokens=300,
    ),
    make_draft(
        name="keep-agent",
        version="1.0.0",
        messages=[Message("system", "You extract data for {{company}}.")],
        model="gpt-4o-mini",
        client_system="keep",
    ),
    make_draft(
        name="logo-prompt",
        version="1.0.0",
        messages=[
            Message("system", "Describe the logo of {{company}}."),
            Message("user", "{{logo}}"),
        ],
        model="gpt-4o-mini",
    ),
)
"""Prompts for tests/api/test_injection.py, each promoted: a reasoning model, a version that keeps
the client's system messages, and a message that is a whole content-part variable."""


@pytest.fixture(scope="session")
def registry_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite registry holding the shipped prompts plus test prompts, with an experiment."""
    path = tmp_path_factory.mktemp("registry") / "gateway.db"

    async def fill() -> None:
        store = SQLiteStore(path)
        registry = PromptRegistry(store, threshold=0.9)
        await registry.push(load_prompt_files([ROOT / "config/prompts"]), actor="setup")
        await registry.promote("support-agent", "1.1.0", actor="setup", force=True)
        for version, text in (
            ("1.0.0", "Version one for {{company}}."),
            ("2.0.0", "Version two for {{company}}."),
        ):
            await registry.create_version(
                make_draft(
                    name="ab-prompt",
                    version=version,
                    messages=[Message("system", text)],
                    model="gpt-4o-mini",
                ),
                actor="setup",
            )
        await registry.promote("ab-prompt", "1.0.0", actor="setup", force=True)
        await registry.create_experiment(
            ExperimentSpec("ab-test", "ab-prompt", "1.0.0", "2.0.0", 0.5), actor="setup"
        )
        await registry.create_version(
            make_draft(name="no-model", version="1.0.0", messages=[Message("system", "Hi.")]),
            actor="setup",
        )
        await registry.promote("no-model", "1.0.0", actor="setup", force=True)
        for draft in INJECTION_PROMPTS:
            await registry.create_version(draft, actor="setup")
            await registry.promote(draft.name, draft.version, actor="setup", force=True)
        for version, model in (("1.0.0", "my-reasoner-1"), ("1.1.0", "my-reasoner-2")):
            await registry.create_version(
                make_draft(
                    name="quirky",
                    version=version,
                    messages=[Message("system", "Think.")],
                    model=model,
                    temperature=0.5,
                    max_tokens=100,
                ),
                actor="setup",
            )

    asyncio.run(fill())
    return path


@pytest.fixture(scope="session")
def make_gateway(
    provider: FakeProvider, registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MakeGateway]:
    """Start gateways with a given config file text and environment; all stop at session end."""
    started: list[ServedGateway] = []

    def make(config: str = "", *, own_protocol: bool = True, **environ: str) -> ServedGateway:
        config_path = tmp_path_factory.mktemp("config") / "gateway.yaml"
        config_path.write_text(config)
        env = {
            "GATEWAY_UPSTREAM_URL": provider.url,
            "TIKTOKEN_CACHE_DIR": os.environ.get("TIKTOKEN_CACHE_DIR", ""),
            **environ,
        }
        settings = load(config_path, env)
        gateway = ServedGateway(
            create_app(settings, store=SQLiteStore(registry_path)), own_protocol=own_protocol
        )
        started.append(gateway)
        return gateway

    yield make
    ServedGateway.stop_all(started)


@pytest.fixture(scope="session")
def gateway(make_gateway: MakeGateway) -> ServedGateway:
    """The default gateway: production, every model to the fake provider, no provider key."""
    return make_gateway()
