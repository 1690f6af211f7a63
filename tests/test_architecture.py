"""Dependency rules of STYLE.md, checked by walking the imports with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "gateway"


def imports(path: Path) -> set[str]:
    """Every module a file imports, as dotted names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


FORBIDDEN_IN_CORE = (
    "asyncio",
    "httpx",
    "aiohttp",
    "httptools",
    "redis",
    "litestar",
    "opentelemetry",
    "tiktoken",
    "os",
    "yaml",
    "sqlite3",
    "time",
)


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_is_pure(path: Path) -> None:
    """core/ imports only the standard library's pure parts, itself and errors."""
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN_IN_CORE, f"{path.name} imports {name}"
        if top == "gateway":
            assert name.startswith(("gateway.core", "gateway.errors")), f"{path.name}: {name}"


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_never_reads_the_clock(path: Path) -> None:
    """The clock is passed into the core, never read there."""
    text = path.read_text()
    assert ".now(" not in text and "utcnow" not in text


@pytest.mark.parametrize("path", modules("stores"), ids=lambda p: p.name)
def test_stores_do_not_reach_outward(path: Path) -> None:
    """stores/ sees the core, never the CLI, the API, upstream or telemetry."""
    for name in imports(path):
        if name.startswith("gateway."):
            assert name.split(".")[1] in {"core", "errors", "stores"}, f"{path.name}: {name}"


def test_only_composition_roots_build_concrete_stores() -> None:
    """Only cli/serve.py, api/app.py and the store factory import a concrete backend."""
    concrete = {"gateway.stores.redis", "gateway.stores.sqlite"}
    allowed = {
        PACKAGE / "cli" / "serve.py",
        PACKAGE / "api" / "app.py",
        PACKAGE / "stores" / "factory.py",
    }
    for path in PACKAGE.rglob("*.py"):
        if path in allowed or path.parent == PACKAGE / "stores":
            continue
        assert not imports(path) & concrete, f"{path} imports a concrete store"


def test_print_only_in_the_cli() -> None:
    """No module but the command line's prints."""
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE / "cli":
            continue
        calls = [
            n
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
        ]
        assert not calls, f"{path} calls print"


def test_every_package_has_a_docstring() -> None:
    """Each package's __init__.py says what lives there."""
    for init in PACKAGE.rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


ALSO_AT_HOME = {"httpx": {PACKAGE / "cli" / "remote.py"}}
"""Modules outside a library's home that may import it: the command line's remote backend is an
httpx client of the admin API (STYLE.md: cli/ has a local and a remote backend)."""


@pytest.mark.parametrize(
    ("library", "home"),
    [("httpx", "upstream"), ("litestar", "api"), ("uvicorn", "api")],
)
def test_libraries_stay_in_their_module(library: str, home: str) -> None:
    """HTTP clients live only in upstream/ (and httpx in the CLI's client of /admin), the web
    framework only in api/."""
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == home or path in ALSO_AT_HOME.get(library, ()):
            continue
        assert not any(n.split(".")[0] == library for n in imports(path)), (
            f"{path.relative_to(ROOT)} imports {library}"
        )


TEST_ONLY = ("aiohttp", "openai", "pytest", "hypothesis", "statsmodels", "playwright")
"""The `test` extra's libraries: a plain `pip install` of the gateway does not have them."""


def test_the_package_needs_no_test_library() -> None:
    for path in PACKAGE.rglob("*.py"):
        used = {n.split(".")[0] for n in imports(path)} & set(TEST_ONLY)
        assert not used, f"{path.relative_to(ROOT)} imports {used}"


def test_request_path_never_touches_a_store() -> None:
    """service.py and api/proxy.py see only the snapshot, never a store module."""
    for path in (PACKAGE / "service.py", PACKAGE / "api" / "proxy.py"):
        assert not [n for n in imports(path) if n.startswith("gateway.stores")], path


def test_tiktoken_stays_in_one_module() -> None:
    """Only telemetry/tokens.py imports tiktoken (and only lazily, in its loader thread)."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "tokens.py":
            continue
        assert not any(n.split(".")[0] == "tiktoken" for n in imports(path)), path
