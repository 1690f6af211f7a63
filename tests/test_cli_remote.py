"""The command line as a client of a gateway's admin API: the same output as on the store, and
the failures only a remote registry has (no token, a wrong one, a role too low, a gateway down)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from typer.testing import CliRunner

from gateway.cli import app
from gateway.cli.remote import RemoteBackend
from gateway.core.outcomes import Exposure, Feedback
from gateway.core.promptfile import parse_prompt_file
from gateway.files import read_yaml
from gateway.stores.sqlite import SQLiteStore
from tests.conftest import (
    ADMIN_TOKEN,
    EDITOR_TOKEN,
    ROOT,
    VIEWER_TOKEN,
    free_port,
    serve_project,
)
from tests.outcome_rows import record_outcomes

STRICT = (
    "name: strict\nversion: 1.0.0\ncontent: You help {{company}}.\n"
    "tests:\n"
    "  - id: ok\n    variables: {company: Acme}\n    expect: {contains: [Acme]}\n"
    "  - id: wants-json\n    variables: {company: Acme}\n"
    "    expect: {json_schema: {type: object}}\n"
)
"""A prompt whose tests pass half the time on the mock provider."""


@pytest.fixture
def served(project: Path) -> Iterator[Any]:
    """A gateway serving the project (see tests.conftest.serve_project)."""
    gateway = serve_project(project)
    yield gateway
    gateway.stop()


def cli(*args: str, url: str | None = None, token: str | None = None) -> Result:
    """`gateway ARGS...` in-process with GATEWAY_URL and GATEWAY_ADMIN_TOKEN as given."""
    env = {"GATEWAY_URL": url, "GATEWAY_ADMIN_TOKEN": token}
    return CliRunner().invoke(app, list(args), env=env)


def one_line_error(result: Result) -> str:
    """The failure's message: exit 1, one line on stderr, nothing on stdout."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def json_error(result: Result) -> dict[str, str]:
    """The --json failure: exit 1, `{"error": {"message", "code"}}` on stdout."""
    assert result.exit_code == 1, result.output
    error: dict[str, str] = orjson.loads(result.stdout)["error"]
    assert set(error) == {"message", "code"}
    return error


# ---- the same output either way ---------------------------------------------------------------

SESSION: list[tuple[str, ...]] = [
    ("prompts", "push"),
    ("prompts", "push", "config/prompts", "--json"),
    ("prompts", "list"),
    ("prompts", "list", "--json"),
    ("prompts", "show", "support-agent"),
    ("prompts", "show", "support-agent", "--json"),
    ("prompts", "show", "support-agent", "--version", "1.1.0"),
    (
        "prompts",
        "render",
        "support-agent",
        "--version",
        "1.0.0",
        "--var",
        "company=Acme",
        "--var",
        "timezone=UTC",
    ),
    (
        "prompts",
        "render",
        "support-agent",
        "--env",
        "development",
        "--var",
        "company=Acme",
        "--var",
        "timezone=UTC",
        "--var",
        "tools=search",
        "--json",
    ),
    ("prompts", "resolve", "support-agent", "--env", "development"),
    ("prompts", "resolve", "support-agent", "--env", "staging"),
    ("prompts", "test", "support-agent"),
    ("prompts", "test", "support-agent", "--version", "1.0.0", "--json"),
    ("prompts", "show", "support-agent", "--version", "1.1.0", "--json"),
    ("prompts", "promote", "support-agent", "1.0.0"),
    ("prompts", "promote", "support-agent", "1.0.0", "--json"),
    ("prompts", "promote", "release-notes", "1.0.0"),
    ("prompts", "promote", "support-agent", "1.1.0", "--json"),
    ("prompts", "rollback", "support-agent"),
    ("prompts", "diff", "support-agent", "1.0.0", "1.1.0"),
    ("prompts", "diff", "support-agent", "1.0.0", "1.1.0", "--json"),
    (
        "experiments",
        "create",
        "--id",
        "tc",
        "--prompt",
        "support-agent",
        "--control",
        "1.0.0",
        "--treatment",
        "1.1.0",
        "--split",
        "0.5",
        "--metric",
        "task_completion",
    ),
    ("experiments", "create", "--file", "config/experiments.yaml", "--json"),
    ("experiments", "list"),
    ("experiments", "list", "--json"),
    ("prompts", "resolve", "support-agent", "--user", "user-2", "--json"),
    ("experiments", "results", "tc"),
    ("experiments", "results", "tc", "--json"),
    ("experiments", "conclude", "tc"),
    ("experiments", "stop", "tc", "--json"),
    ("audit",),
    ("audit", "--prompt", "support-agent", "--limit", "3", "--json"),
    ("prompts", "show", "suport-agent"),
    ("prompts", "show", "support-agent", "--version", "1.2.0", "--json"),
    ("prompts", "test", "suport-agent"),
    ("prompts", "rollback", "release-notes"),
    ("experiments", "results", "tcc", "--json"),
]
"""Every registry command, with tables and --json, successes and failures."""

_MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(\+00:00)?"), "<time>"),
    (re.compile(r"\d\d-\d\d \d\d:\d\d:\d\d"), "<time>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<id>"),
]


def _masked(text: str) -> str:
    """Text with its clock times and random ids replaced: what may differ between two runs."""
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


def _record(db: Path) -> None:
    """120 users per arm of experiment `tc`, task completion 30% (control) and 60% (treatment):
    enough for `conclude` to promote the treatment."""
    at = datetime(2026, 11, 29, tzinfo=UTC)
    exposures, feedback = [], []
    for arm, version, rate in (("control", "1.0.0", 0.3), ("treatment", "1.1.0", 0.6)):
        for i in range(120):
            request_id = f"req_{arm}_{i}"
            exposures.append(
                Exposure(
                    request_id, "tc", arm, version, f"{arm}-{i}", at, 100.0, 10, 5, 0.0001, 200
                )  # type: ignore[arg-type]
            )
            feedback.append(Feedback(request_id, "task_completion", 1.0 if i < rate * 120 else 0.0))
    asyncio.run(record_outcomes(SQLiteStore(db), exposures, feedback))


def _run_session(root: Path, monkeypatch: pytest.MonkeyPatch, remote: bool) -> list[str]:
    """Run SESSION in a fresh copy of the shipped config; each command's exit code and output."""
    root.mkdir()
    (root / "config").symlink_to(ROOT / "config", target_is_directory=True)
    monkeypatch.chdir(root)
    runner = CliRunner()
    served = serve_project(root) if remote else None
    outputs = []
    try:
        for args in SESSION:
            if args[:2] == ("experiments", "results") and not (root / "recorded").exists():
                _record(root / "gateway.db")
                (root / "recorded").touch()
            if served is None:
                local = {"GATEWAY_URL": None, "GATEWAY_UPSTREAM_URL": "mock"}  # as the server
                result = runner.invoke(app, ["--actor", "tester", *args], env=local)
            else:
                env = {"GATEWAY_URL": served.url, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}
                result = runner.invoke(app, list(args), env=env)
            outputs.append(
                _masked(
                    f"$ {' '.join(args)}\nexit {result.exit_code}\n{result.stdout}{result.stderr}"
                )
            )
    finally:
        if served is not None:
            served.stop()
    return outputs


def test_a_session_prints_the_same_through_either_backend(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every registry command prints the same tables, JSON, messages and exit codes on the store
    as through GATEWAY_URL (clock times and random ids aside)."""
    local = _run_session(tmp_path / "local", monkeypatch, remote=False)
    remote = _run_session(tmp_path / "remote", monkeypatch, remote=True)
    for here, there in zip(local, remote, strict=True):
        assert here == there
    assert sum("\nexit 1\n" in text for text in local) >= 7  # the failures were compared too


# ---- what only a remote registry does -------------------------------------------------------


def test_push_sends_the_files_contents(served: Any, project: Path) -> None:
    """A file the server has never seen is pushed from its contents, named as given."""
    (project / "elsewhere").mkdir()
    (project / "elsewhere/strict.yaml").write_text(STRICT)
    pushed = cli("prompts", "push", "elsewhere", "--json", url=served.url, token=ADMIN_TOKEN)
    assert pushed.exit_code == 0, pushed.output
    assert orjson.loads(pushed.stdout) == [
        {"name": "strict", "version": "1.0.0", "status": "created", "file": "elsewhere/strict.yaml"}
    ]
    shown = cli("prompts", "show", "strict", "--json", url=served.url, token=ADMIN_TOKEN)
    assert orjson.loads(shown.stdout)["versions"][0]["created_by"] == "tester"


def test_test_runs_the_local_files_tests_on_the_server(served: Any, project: Path) -> None:
    """`prompts test --path` sends the local tests, which the server's prompts_dir lacks."""
    (project / "elsewhere").mkdir()
    (project / "elsewhere/strict.yaml").write_text(STRICT)
    cli("prompts", "push", "elsewhere", url=served.url, token=ADMIN_TOKEN)
    run = cli(
        "prompts", "test", "strict", "--path", "elsewhere", "--json",
        url=served.url, token=ADMIN_TOKEN,
    )  # fmt: skip
    assert run.exit_code == 1  # under the promotion threshold
    report = orjson.loads(run.stdout)
    assert (report["total"], report["passed"]) == (2, 1)
    assert report["failures"][0]["test_id"] == "wants-json"
    assert "strict@1.0.0 passed 1 of 2 tests (50%)" in run.stderr


def test_a_remote_test_run_reports_indeterminate_progress(served: Any, project: Path) -> None:
    """The server answers at the end, so the progress bar has no total (a spinner)."""
    assert cli("prompts", "push", url=served.url, token=ADMIN_TOKEN).exit_code == 0
    path = project / "config/prompts/support-agent.yaml"
    file = parse_prompt_file(read_yaml(path), str(path))
    seen: list[tuple[str, int | None]] = []

    class Recorder:
        def start(self, label: str, total: int | None) -> None:
            seen.append((label, total))

        def advance(self) -> None:
            seen.append(("advance", None))

    async def run() -> Any:
        backend = RemoteBackend(served.url, ADMIN_TOKEN)
        try:
            return await backend.test(
                "support-agent", "1.1.0", file, concurrency=2, progress=Recorder()
            )
        finally:
            await backend.close()

    report = asyncio.run(run())
    assert seen == [("support-agent@1.1.0", None)]
    assert (report["total"], report["passed"]) == (2, 2)


@pytest.mark.parametrize("as_json", [False, True])
def test_no_token_says_what_to_set(served: Any, as_json: bool) -> None:
    """A URL without a token fails before any call, saying to set GATEWAY_ADMIN_TOKEN."""
    result = cli("prompts", "list", *(["--json"] if as_json else []), url=served.url)
    if as_json:
        error = json_error(result)
        assert error["code"] == "invalid_admin_token"
        assert "GATEWAY_ADMIN_TOKEN" in error["message"]
    else:
        assert "set GATEWAY_ADMIN_TOKEN (or give --token" in one_line_error(result)


def test_a_wrong_token_is_refused_in_one_line(served: Any) -> None:
    """An unknown token: one line with the server's reason and which variable to fix."""
    line = one_line_error(cli("prompts", "list", url=served.url, token="not-a-token-0123456789"))
    assert "The admin token is not valid." in line
    assert (
        f"Set GATEWAY_ADMIN_TOKEN (or --token) to an admin token the gateway at {served.url}"
        in line
    )
    assert "not-a-token" not in line


def test_url_and_token_options_come_before_the_command(served: Any) -> None:
    """--url and --token work as the environment variables do, and win over them."""
    result = CliRunner().invoke(
        app,
        ["--url", served.url, "--token", VIEWER_TOKEN, "prompts", "list", "--json"],
        env={"GATEWAY_URL": "http://127.0.0.1:1", "GATEWAY_ADMIN_TOKEN": "wrong"},
    )
    assert (result.exit_code, orjson.loads(result.stdout)) == (0, [])


@pytest.mark.parametrize(
    ("token", "args", "needed"),
    [
        (VIEWER_TOKEN, ("prompts", "push"), "needs the editor role; the token 'vera' has viewer"),
        (
            EDITOR_TOKEN,
            ("prompts", "promote", "support-agent", "1.0.0", "--force"),
            "A forced promotion needs the admin role; the token 'eddie' has editor",
        ),
    ],
)
def test_a_role_too_low_names_the_role_needed(
    served: Any, token: str, args: tuple[str, ...], needed: str
) -> None:
    """403: one line naming the role needed; --json carries the API's code."""
    cli("prompts", "push", url=served.url, token=ADMIN_TOKEN)
    line = one_line_error(cli(*args, url=served.url, token=token))
    assert needed in line and "Use a token with that role" in line
    error = json_error(cli(*args, "--json", url=served.url, token=token))
    assert error["code"] == "insufficient_role"


@pytest.mark.parametrize("as_json", [False, True])
def test_a_gateway_that_is_down_is_one_line(project: Path, as_json: bool) -> None:
    """Nothing listening at the URL: one line saying it could not be reached."""
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("audit", *(["--json"] if as_json else []), url=url, token=ADMIN_TOKEN)
    if as_json:
        error = json_error(result)
        assert error["code"] == "store_unavailable" and url in error["message"]
    else:
        line = one_line_error(result)
        assert line.startswith(f"error: Could not reach the gateway at {url} (")
        assert "check GATEWAY_URL (or --url)" in line


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8080", "must start with http:// or https://"),
        ("{served}/somewhere", "has no admin API at /somewhere/admin/prompts"),
        ("{served}/v1", "ends in /v1, the OpenAI endpoint apps use"),
        ("{served}/v1/", "ends in /v1, the OpenAI endpoint apps use"),
    ],
)
def test_a_url_that_is_not_a_gateways_says_so(served: Any, url: str, message: str) -> None:
    """A URL without a scheme, or not the gateway's base, is one line saying what to give."""
    result = cli("prompts", "list", url=url.format(served=served.url), token=ADMIN_TOKEN)
    assert message in one_line_error(result)


def test_actor_is_refused_through_a_url(served: Any) -> None:
    """--actor cannot be honoured remotely (the token's name is the actor): refused, not ignored."""
    result = CliRunner().invoke(
        app,
        ["--actor", "someone", "prompts", "list"],
        env={"GATEWAY_URL": served.url, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    assert "audited under the admin token's name" in one_line_error(result)
