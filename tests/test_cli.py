"""The command line, as a user runs it: the shipped config and prompts, a real store."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import pytest
from openai import OpenAI

from gateway.stores.cached import SnapshotCache
from gateway.stores.redis import RedisStore
from tests.conftest import Gateway, free_port, wait_for_port
from tests.servers import FakeProvider, OtlpReceiver


def test_push_is_idempotent(gateway: Gateway) -> None:
    """Pushing the shipped prompts creates them once; pushing again changes nothing."""
    first = gateway("prompts", "push", "--json")
    assert {(r["name"], r["version"], r["status"]) for r in first} == {
        ("gateway-judge", "1.0.0", "created"),
        ("release-notes", "1.0.0", "created"),
        ("support-agent", "1.0.0", "created"),
        ("support-agent", "1.1.0", "created"),
    }
    again = gateway("prompts", "push", "config/prompts", "--json")
    assert {r["status"] for r in again} == {"unchanged"}
    audit = gateway("audit", "--json")
    assert [e["action"] for e in audit] == ["version.create"] * 4
    assert {e["actor"] for e in audit} == {"tester"}


def test_push_refuses_a_changed_release_naming_the_file(gateway: Gateway, project: Path) -> None:
    """Editing a released version's file without bumping it is refused, and nothing is written."""
    gateway("prompts", "push")
    path = project / "config/prompts/release-notes.yaml"
    path.write_text(path.read_text().replace("under 200 words", "under 150 words"))
    new = project / "config/prompts/zz-new.yaml"
    new.write_text("name: zz-new\nversion: 1.0.0\ncontent: Hello\n")
    result = gateway("prompts", "push", ok=False)
    assert "config/prompts/release-notes.yaml" in result.stderr
    assert "release-notes@1.0.0 is already released" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    names = [p["name"] for p in gateway("prompts", "list", "--json")]
    assert "zz-new" not in names


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\nversion: 1.0.0\ncontent: [unclosed\n", "invalid YAML at line 4"),
        ("name: x\nversion: '1.0'\ncontent: hi\n", "'1.0' is not a semantic version"),
        ("name: Bad Name\nversion: 1.0.0\ncontent: hi\n", "Prompt name 'Bad Name' is invalid"),
        ("name: x\nversion: 1.0.0\nvariables: [a]\ncontent: '{{b}}'\n", "used but not declared: b"),
        ("name: x\nversion: 1.0.0\ncontent: hi\ncolour: red\n", "unknown field colour"),
        ("name: x\nversion: 1.0.0\n", "give either messages or content"),
    ],
)
def test_bad_prompt_files_name_the_file_and_field(
    gateway: Gateway, project: Path, content: str, message: str
) -> None:
    """Each malformed file is refused with one line naming the file and what is wrong."""
    path = project / "bad.yaml"
    path.write_text(content)
    result = gateway("prompts", "push", "bad.yaml", ok=False)
    assert result.stderr.startswith("error: bad.yaml")
    assert message in result.stderr
    assert gateway("prompts", "list", "--json") == []


def test_render_prints_the_rendered_messages(gateway: Gateway) -> None:
    """render fills the variables and prints the messages, as JSON when asked."""
    gateway("prompts", "push")
    doc = gateway(
        "prompts",
        "render",
        "support-agent",
        "--version",
        "1.0.0",
        "--var",
        "company=Acme",
        "--var",
        "timezone=UTC",
        "--json",
    )
    assert doc["name"] == "support-agent" and doc["version"] == "1.0.0"
    assert doc["messages"] == [
        {
            "role": "system",
            "content": "You are the support agent of Acme. Answer briefly and politely.\n"
            "The user's timezone is UTC.\n",
        }
    ]


def test_render_with_a_missing_variable_fails_with_the_contract_message(gateway: Gateway) -> None:
    """A missing variable exits 1 with the exact missing-variables message."""
    gateway("prompts", "push")
    result = gateway(
        "prompts",
        "render",
        "support-agent",
        "--version",
        "1.1.0",
        "--var",
        "company=Acme",
        ok=False,
    )
    assert result.stderr.strip() == (
        "error: Missing variables for prompt support-agent@1.1.0: timezone, tools"
    )


def test_promote_gate_force_and_rollback(gateway: Gateway) -> None:
    """Untested versions need --force; rollback returns to the previous active version."""
    gateway("prompts", "push")
    refused = gateway("prompts", "promote", "support-agent", "1.0.0", ok=False)
    assert "no test run" in refused.stderr and "90%" in refused.stderr
    gateway("prompts", "promote", "support-agent", "1.0.0", "--force")
    gateway("prompts", "promote", "support-agent", "1.1.0", "--force")
    assert gateway("prompts", "resolve", "support-agent", "--json")["version"] == "1.1.0"
    gateway("prompts", "rollback", "support-agent")
    resolved = gateway("prompts", "resolve", "support-agent", "--json")
    assert resolved == {
        "name": "support-agent",
        "version": "1.0.0",
        "number": 1,
        "variant": "none",
        "resolution": "environment",
        "experiment": None,
    }
    entries = gateway("audit", "--prompt", "support-agent", "--json")
    promotions = [e for e in entries if e["action"] == "version.promote"]
    assert [e["forced"] for e in promotions] == [True, True]


def test_resolve_by_environment(gateway: Gateway) -> None:
    """--env picks the environment rule; an environment with nothing to serve says so."""
    gateway("prompts", "push")
    dev = gateway("prompts", "resolve", "support-agent", "--env", "development", "--json")
    assert (dev["version"], dev["resolution"]) == ("1.1.0", "environment")
    missing = gateway("prompts", "resolve", "support-agent", "--env", "staging", ok=False)
    assert "no version to serve in staging" in missing.stderr


@pytest.mark.local_only  # PROMPT_OVERRIDES is the serving process's setting: remotely, the server's
def test_resolve_follows_the_override_of_the_environment(gateway: Gateway) -> None:
    """PROMPT_OVERRIDES wins over the environment rule."""
    gateway("prompts", "push")
    pinned = gateway(
        "prompts",
        "resolve",
        "support-agent",
        "--env",
        "staging",
        "--json",
        env={"PROMPT_OVERRIDES": '{"support-agent": "1.0.0"}'},
    )
    assert (pinned["version"], pinned["resolution"]) == ("1.0.0", "override")


def test_experiment_assigns_users_consistently(gateway: Gateway) -> None:
    """During an experiment each user always gets the same variant; stop ends it."""
    gateway("prompts", "push")
    created = gateway(
        "experiments",
        "create",
        "--id",
        "exp-1",
        "--prompt",
        "support-agent",
        "--control",
        "1.0.0",
        "--treatment",
        "1.1.0",
        "--split",
        "0.1",
        "--json",
    )
    assert (created["status"], created["traffic_split"]) == ("running", 0.1)
    # bucket(user-1, exp-1) = 1056 >= 1000: control; bucket(user-2, exp-1) = 514: treatment
    one = gateway("prompts", "resolve", "support-agent", "--user", "user-1", "--json")
    two = gateway("prompts", "resolve", "support-agent", "--user", "user-2", "--json")
    assert (one["variant"], one["version"], one["experiment"]) == ("control", "1.0.0", "exp-1")
    assert (two["variant"], two["version"], two["resolution"]) == (
        "treatment",
        "1.1.0",
        "experiment",
    )
    clash = gateway(
        "experiments",
        "create",
        "--id",
        "exp-2",
        "--prompt",
        "support-agent",
        "--control",
        "1.1.0",
        "--treatment",
        "1.0.0",
        "--split",
        "0.5",
        ok=False,
    )
    assert "already running" in clash.stderr
    listed = gateway("experiments", "list", "--json")
    assert [(e["id"], e["running_now"]) for e in listed] == [("exp-1", True)]
    gateway("experiments", "stop", "exp-1")
    after = gateway(
        "prompts", "resolve", "support-agent", "--env", "development", "--user", "user-2", "--json"
    )
    assert (after["variant"], after["resolution"]) == ("none", "environment")


def test_experiments_from_the_shipped_file(gateway: Gateway) -> None:
    """config/experiments.yaml creates its experiments once; a second run leaves them alone."""
    gateway("prompts", "push")
    first = gateway("experiments", "create", "--file", "config/experiments.yaml", "--json")
    second = gateway("experiments", "create", "--file", "config/experiments.yaml", "--json")
    assert [e["result"] for e in first] == ["created"]
    assert [e["result"] for e in second] == ["unchanged"]


def test_diff_shows_template_and_parameter_changes(gateway: Gateway) -> None:
    """diff prints a unified diff of two versions' parameters and messages."""
    gateway("prompts", "push")
    doc = gateway("prompts", "diff", "support-agent", "1.0.0", "1.1.0", "--json")
    assert doc["changed"] is True
    assert "-temperature: 0.3\n+temperature: 0.2" in doc["diff"]
    assert "+Tools you may use: {{tools}}." in doc["diff"]
    same = gateway("prompts", "diff", "support-agent", "1.0.0", "1.0.0", "--json")
    assert (same["changed"], same["diff"]) == (False, "")


def test_show_lists_versions_and_one_version(gateway: Gateway) -> None:
    """show gives the versions of a prompt, or every field of one version."""
    gateway("prompts", "push")
    listing = gateway("prompts", "show", "support-agent", "--json")
    assert [v["version"] for v in listing["versions"]] == ["1.0.0", "1.1.0"]
    one = gateway("prompts", "show", "support-agent", "--version", "1.1.0", "--json")
    assert (one["number"], one["variables"], one["is_active"]) == (
        2,
        ["company", "timezone", "tools"],
        False,
    )
    text = gateway("prompts", "show", "support-agent").stdout
    assert "1.0.0" in text and "1.1.0" in text


@pytest.mark.parametrize(
    "args",
    [
        ("prompts", "show", "nope"),
        ("prompts", "resolve", "nope"),
        ("prompts", "promote", "support-agent", "9.9.9"),
        ("prompts", "diff", "support-agent", "1.0.0", "9.9.9"),
        ("experiments", "stop", "nope"),
        ("prompts", "render", "support-agent", "--var", "novalue"),
    ],
)
def test_failures_exit_1_with_one_line(gateway: Gateway, args: tuple[str, ...]) -> None:
    """Unknown prompts, versions and experiments, and bad input, exit 1 with one line."""
    gateway("prompts", "push")
    result = gateway(*args, ok=False)
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.local_only  # the local config file: remotely, the server read its own at start
def test_bad_config_names_the_key(gateway: Gateway, project: Path) -> None:
    """An invalid config file stops the command with the file and key named."""
    config = project / "config/gateway.yaml"
    config.write_text(config.read_text().replace("threshold: 0.9", "threshold: lots"))
    result = gateway("prompts", "list", ok=False)
    assert "config/gateway.yaml: promotion.threshold must be a number" in result.stderr


@pytest.mark.local_only  # the store's own URL: remotely, the server's
def test_unreachable_redis_is_one_clear_line(gateway: Gateway) -> None:
    """A Redis URL that does not answer fails fast with the URL (password hidden)."""
    result = gateway(
        "prompts", "list", ok=False, env={"GATEWAY_STORE_URL": "redis://:hunter2@127.0.0.1:1/0"}
    )
    assert "Redis store at redis://:***@127.0.0.1:1/0 did not answer" in result.stderr
    assert "hunter2" not in result.stderr


async def test_cli_push_in_another_process_reaches_a_gateway_snapshot(
    project: Path, redis_url: str
) -> None:
    """The installed `gateway` command, run as its own process, changes what a cache serves."""
    prefix_url = redis_url.rsplit("/", 1)[0] + "/3"  # a database of this test's own
    store = RedisStore(prefix_url)
    await store._client.flushdb()
    cache = SnapshotCache(store)
    await cache.start()
    env = {**os.environ, "GATEWAY_STORE_URL": prefix_url}
    binary = Path(sys.executable).parent / "gateway"
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "prompts",
        "push",
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr
    deadline = asyncio.get_running_loop().time() + 1.0
    while "support-agent" not in cache.current.prompts:
        assert asyncio.get_running_loop().time() < deadline, "not visible within 1 s"
        await asyncio.sleep(0.01)
    await cache.stop()
    await store.close()


def test_test_run_gates_promotion_offline(gateway: Gateway, project: Path) -> None:
    """`prompts test` with the mock provider stores the pass rate; promotion follows it."""
    env = {"GATEWAY_UPSTREAM_URL": "mock"}
    gateway("prompts", "push")
    report = gateway("prompts", "test", "support-agent", "--json", env=env)
    assert (report["version"], report["passed"], report["total"]) == ("1.1.0", 2, 2)
    assert report["is_tested"] is True
    gateway("prompts", "promote", "support-agent", "1.1.0")
    staging = gateway("prompts", "resolve", "support-agent", "--env", "staging", "--json")
    assert staging["version"] == "1.1.0"

    (project / "config/prompts/strict.yaml").write_text(
        "name: strict\nversion: 1.0.0\ncontent: You help {{company}}.\n"
        "tests:\n"
        "  - id: ok\n    variables: {company: Acme}\n    expect: {contains: [Acme]}\n"
        "  - id: wants-json\n    variables: {company: Acme}\n"
        "    expect: {json_schema: {type: object}}\n"
    )
    gateway("prompts", "push")
    failed = gateway("prompts", "test", "strict", ok=False, env=env)
    assert "strict@1.0.0 passed 1 of 2 tests (50%)" in failed.stderr
    shown = gateway("prompts", "show", "strict", "--version", "1.0.0", "--json")
    assert shown["is_tested"] is False
    assert shown["test_results"]["failures"][0]["expectation"] == "json_schema"
    refused = gateway("prompts", "promote", "strict", "1.0.0", ok=False)
    assert "pass rate 50%" in refused.stderr


@pytest.mark.local_only  # the working directory is the command's own
def test_a_folder_without_config_says_where_it_looked(
    gateway: Gateway, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from a folder without config/, a reading command creates no ./gateway.db: it fails
    naming the store and where the config was looked for; push creates the store and says so."""
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    missing = gateway("prompts", "list", ok=False)
    message = " ".join(missing.stderr.split())  # rich wraps long lines
    assert f"No registry at {elsewhere}/gateway.db (store sqlite:///gateway.db;" in message
    assert f"no config file: config/gateway.yaml is not in {elsewhere}" in message
    assert not (elsewhere / "gateway.db").exists()
    as_json = gateway("prompts", "show", "support-agent", "--json", ok=False)
    assert orjson.loads(as_json.stdout)["error"]["code"] == "store_not_found"
    pushed = gateway("prompts", "push", str(project / "config/prompts"))
    assert f"note: creating a new registry at {elsewhere}/gateway.db" in " ".join(
        pushed.stderr.split()
    )
    assert len(gateway("prompts", "list", "--json")) == 3


@pytest.mark.local_only  # the config is the command's own
@pytest.mark.parametrize("command", [("prompts", "list"), ("serve",)])
def test_a_config_that_is_not_yaml_is_one_line(
    gateway: Gateway, project: Path, command: tuple[str, ...]
) -> None:
    """An invalid YAML config stops a command in one line naming the file, line and column."""
    (project / "config/gateway.yaml").write_text("server:\n  port: 8080\n host: x\n")
    failed = gateway(*command, ok=False)
    assert failed.stderr.splitlines() == [
        "error: config/gateway.yaml: invalid YAML at line 3, column 2: expected <block end>, "
        "but found '<block mapping start>'."
    ]


@pytest.mark.local_only  # serve runs locally
def test_serve_without_config_warns_it_serves_an_empty_registry(
    gateway: Gateway, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gateway serve` in a folder without config/ says where it looked and warns, on start and
    in its log, that it serves no managed prompts; /readyz still answers. The reading commands
    run there afterwards say the same on stderr (the output itself is the empty registry's)."""
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gateway"), "serve", "--port", str(port)],
        cwd=elsewhere,
        env={**os.environ, "GATEWAY_UPSTREAM_URL": "mock"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=20)
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=15)
    text = " ".join(stderr.decode().split())
    assert f"no config file: config/gateway.yaml is not in {elsewhere}" in text
    assert f"warning: no registry at {elsewhere}/gateway.db yet" in text
    assert "serving an empty registry (store sqlite:///gateway.db" in text

    monkeypatch.chdir(elsewhere)
    for args in (("prompts", "list"), ("experiments", "list"), ("audit",)):
        listed = gateway(*args)
        note = " ".join(listed.stderr.split())
        assert (
            f"note: the registry at {elsewhere}/gateway.db holds no prompts (no config file: "
            in note
        )
        assert "push some: gateway prompts push PATH" in note
    assert gateway("prompts", "list", "--json") == []
    gateway("prompts", "push", str(project / "config/prompts"))
    assert gateway("prompts", "list").stderr == ""


@pytest.mark.local_only  # the provider is the command's own (from its environment)
def test_a_test_run_that_cannot_reach_its_provider_stores_nothing(
    gateway: Gateway, project: Path
) -> None:
    """A provider that refuses connections, rate-limits or fails makes the run an error, not a
    failure: exit 2 naming the provider, nothing stored, the tested mark (and so what staging
    serves) unchanged."""
    gateway("prompts", "push")
    gateway("prompts", "test", "support-agent", env={"GATEWAY_UPSTREAM_URL": "mock"})
    before = gateway("prompts", "show", "support-agent", "--version", "1.1.0", "--json")
    assert before["is_tested"] is True
    dead = {"GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{free_port()}/v1"}
    result = gateway("prompts", "test", "support-agent", ok=False, exit_code=2, env=dead)
    assert result.stderr.strip().startswith("error: Tests not run: Provider 'default' (127.0.0.1)")
    assert "is unreachable" in result.stderr and "Nothing was stored" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    as_json = gateway("prompts", "test", "support-agent", "--json", ok=False, exit_code=2, env=dead)
    assert orjson.loads(as_json.stdout)["error"]["code"] == "test_run_aborted"
    for model in ("error-429", "error-500"):
        (project / f"config/prompts/{model}.yaml").write_text(
            f"name: {model}\nversion: 1.0.0\nmodel: {model}\ncontent: Hi.\n"
            "tests:\n  - id: one\n    expect: {contains: [Hi]}\n"
        )
    gateway("prompts", "push")
    fake = FakeProvider()
    try:
        for model in ("error-429", "error-500"):
            env = {"GATEWAY_UPSTREAM_URL": fake.url}
            aborted = gateway("prompts", "test", model, ok=False, exit_code=2, env=env)
            assert f"answered {model[-3:]}" in aborted.stderr
            shown = gateway("prompts", "show", model, "--version", "1.0.0", "--json")
            assert shown["test_results"] is None and shown["is_tested"] is False
    finally:
        fake.stop()
    after = gateway("prompts", "show", "support-agent", "--version", "1.1.0", "--json")
    assert after["is_tested"] is True and after["test_results"] == before["test_results"]
    staging = gateway("prompts", "resolve", "support-agent", "--env", "staging", "--json")
    assert staging["version"] == "1.1.0"
    audit = gateway("audit", "--json")
    assert [e["action"] for e in audit].count("version.test") == 1


@pytest.mark.local_only  # serve runs locally, whatever GATEWAY_URL says
def test_serve_as_the_readme_runs_it(gateway: Gateway, project: Path) -> None:
    """`gateway serve` with the mock answers the quickstart's SDK call and exports its span."""
    gateway("prompts", "push")
    gateway("prompts", "test", "support-agent", env={"GATEWAY_UPSTREAM_URL": "mock"})
    gateway("prompts", "promote", "support-agent", "1.1.0")
    receiver = OtlpReceiver()
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_UPSTREAM_URL": "mock",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    binary = Path(sys.executable).parent / "gateway"
    server = subprocess.Popen(
        [str(binary), "serve", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=20)
        reply = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Where is my order?"}],
            extra_body={
                "prompt": {
                    "id": "support-agent",
                    "variables": {"company": "Acme", "timezone": "UTC", "tools": "search"},
                }
            },
        )
        assert reply.headers["x-prompt-name"] == "support-agent"
        assert reply.parse().choices[0].message.content
        deadline = time.monotonic() + 5
        while not receiver.spans:
            assert time.monotonic() < deadline, "no span exported within 5 s"
            time.sleep(0.02)
        assert receiver.spans[0].attributes["gen_ai.prompt.name"] == "support-agent"
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=15)
        receiver.stop()
    assert server.returncode == 0, stderr


def test_version(gateway: Gateway) -> None:
    """gateway --version prints the installed version."""
    assert gateway("--version").stdout.startswith("gateway ")


def test_json_failures_are_json_on_stdout(gateway: Gateway) -> None:
    """With --json a failure is {"error": {"message", "code"}} on stdout, exit 1."""
    gateway("prompts", "push")
    failed = gateway("prompts", "show", "nope", "--json", ok=False)
    error = orjson.loads(failed.stdout)["error"]
    assert error["code"] == "prompt_not_found" and "nope" in error["message"]


def test_promote_and_rollback_answer_one_json_shape(gateway: Gateway) -> None:
    """Both give {name, active, previous, changed, forced, audit}."""
    gateway("prompts", "push")
    gateway("prompts", "promote", "support-agent", "1.0.0", "--force")
    promoted = gateway("prompts", "promote", "support-agent", "1.1.0", "--force", "--json")
    rolled = gateway("prompts", "rollback", "support-agent", "--json")
    assert (
        set(promoted)
        == set(rolled)
        == {
            "name",
            "active",
            "previous",
            "changed",
            "forced",
            "audit",
        }
    )
    assert (promoted["previous"], promoted["active"], promoted["forced"]) == (
        "1.0.0",
        "1.1.0",
        True,
    )
    assert (rolled["previous"], rolled["active"], rolled["forced"]) == ("1.1.0", "1.0.0", False)


@pytest.mark.parametrize("command", ["show", "test"])
def test_an_unknown_prompt_suggests_the_closest_names(gateway: Gateway, command: str) -> None:
    """A misspelt name says it does not exist and names the prompt that was meant."""
    gateway("prompts", "push")
    failed = gateway("prompts", command, "suport-agent", ok=False)
    assert "does not exist" in failed.output and "Did you mean: support-agent" in failed.output


def test_a_split_out_of_range_names_the_flag(gateway: Gateway) -> None:
    """--split 30 (a percentage) is refused naming the flag and the range."""
    gateway("prompts", "push")
    failed = gateway(
        "experiments",
        "create",
        "--id",
        "x",
        "--prompt",
        "support-agent",
        "--control",
        "1.0.0",
        "--treatment",
        "1.1.0",
        "--split",
        "30",
        ok=False,
    )
    assert "--split 30" in failed.output and "between 0 and 1" in failed.output


def test_the_audit_table_fits_100_columns(gateway: Gateway) -> None:
    """Audit rows stay within 100 columns; --json has the full documents."""
    gateway("prompts", "push")
    gateway("prompts", "promote", "support-agent", "1.1.0", "--force")
    text = gateway("audit").stdout
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 100
    assert "active None -> 1.1.0 (forced)" in text


def test_costs_are_printed_rounded() -> None:
    """A cost figure is dollars with fixed decimals, never in scientific notation."""
    from gateway.cli.render import figure

    assert figure(0.0000123, "cost_per_task") == "$0.000012"
    assert figure(12.345, "cost_per_task") == "$12.35"


@pytest.mark.local_only
def test_serve_on_a_port_in_use_is_one_line(gateway: Gateway) -> None:
    """A taken port exits 1 with one line naming the port and --port, before uvicorn starts."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failed = gateway("serve", "--port", str(port), ok=False)
    assert f"Port {port} on 127.0.0.1 is in use" in failed.output and "--port" in failed.output


@pytest.mark.parametrize("limit", ["0", "-3", "5000"])
def test_audit_limit_out_of_range_names_the_flag(gateway: Gateway, limit: str) -> None:
    """--limit outside 1..1000 is refused the same way against the store and the API."""
    gateway("prompts", "push")
    failed = gateway("audit", "--limit", limit, ok=False)
    assert f"--limit {limit} is out of range" in failed.output


@pytest.mark.local_only
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["audit", "--limit", "abc"], "Invalid value for '--limit'"),
        (["prompts", "show"], "Missing argument 'name'"),
    ],
)
def test_usage_errors_with_json_are_json(project: Path, args: list[str], message: str) -> None:
    """With --json even a usage error is {"error": {"message", "code": "usage_error"}}, exit 1."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gateway"), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    error = orjson.loads(done.stdout)["error"]
    assert error["code"] == "usage_error" and message in error["message"]


@pytest.fixture
def demo_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder of the test's own where the demo makes its store, and the demo's
    environment variables restored after the test (the demo sets them in this process)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    for name in ("GATEWAY_UPSTREAM_URL", "GATEWAY_ADMIN_TOKENS", "GATEWAY_CONFIG"):
        monkeypatch.setenv(name, "unset")
    for name in ("GATEWAY_STORE_URL", "GATEWAY_ENV"):
        monkeypatch.setenv(name, os.environ.get(name, "unset"))
    return folder


@pytest.mark.local_only
def test_demo_on_a_port_in_use_fails_first_and_leaves_nothing(
    gateway: Gateway, demo_tmp: Path
) -> None:
    """A taken port is the demo's first and only line: no store built, no banner, no folder."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failed = gateway("demo", "--port", str(port), ok=False)
    lines = failed.output.strip().splitlines()
    assert len(lines) == 1 and f"Port {port} on 127.0.0.1 is in use" in lines[0], failed.output
    assert list(demo_tmp.iterdir()) == []


@pytest.mark.local_only
def test_a_demo_that_fails_removes_its_folder(
    gateway: Gateway, demo_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When building the demo's store fails, the temporary folder is removed with it."""
    from gateway.errors import StoreUnavailable

    demo = sys.modules["gateway.cli.demo"]  # `gateway.cli.demo` is also the command's function

    seen: list[int] = []

    def broken(paths: object) -> list[object]:
        seen.append(len(list(demo_tmp.iterdir())))
        raise StoreUnavailable("the disk is full")

    monkeypatch.setattr(demo, "load_prompt_files", broken)
    failed = gateway("demo", "--port", str(free_port()), ok=False)
    assert failed.output.strip() == "error: the disk is full"
    assert seen == [1] and list(demo_tmp.iterdir()) == []  # made, then removed


def test_demo_serves_a_managed_call_in_an_experiment(project: Path) -> None:
    """`gateway demo` alone: the mock provider, the examples tested and promoted, an experiment
    running; an SDK call through it is served by a prompt version of the experiment."""
    port = free_port()
    demo = subprocess.Popen(
        [str(Path(sys.executable).parent / "gateway"), "demo", "--port", str(port)],
        cwd=project,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    shown = b""
    try:
        wait_for_port(port, 60)
        # The banner is printed (and flushed) before the server starts: it says where the
        # console is and which token signs in there, and that token does.
        deadline = time.monotonic() + 10
        assert demo.stdout is not None
        while b"Try:" not in shown and time.monotonic() < deadline:
            if select.select([demo.stdout], [], [], 0.5)[0]:
                shown += os.read(demo.stdout.fileno(), 65536)
        found = re.search(
            rb"open (http://127\.0\.0\.1:\d+/ui) and sign in with the admin token (\S+)", shown
        )
        assert found is not None, shown
        assert found[1].decode() == f"http://127.0.0.1:{port}/ui"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as browser:
            form = browser.get("/ui/sign-in")
            nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert nonce is not None
            token = found[2].decode()
            signed = browser.post("/ui/sign-in", data={"csrf": nonce[1], "token": token})
            assert (signed.status_code, signed.headers["location"]) == (303, "/ui/prompts")
            assert "demo (admin)" in browser.get("/ui/prompts").text
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Where is my order?"}],
            extra_body={
                "prompt": {
                    "id": "support-agent",
                    "variables": {"company": "Acme", "timezone": "UTC", "tools": "search"},
                }
            },
            extra_headers={"X-User-Id": "alice"},
        )
        assert raw.headers["x-prompt-experiment"] == "demo-ab"
        assert raw.headers["x-prompt-version"] in ("1.0.0", "1.1.0")
        assert "Acme" in (raw.parse().choices[0].message.content or "")
        client.close()
    finally:
        demo.send_signal(signal.SIGINT)
        printed, _ = demo.communicate(timeout=20)
    assert b"gateway experiments results demo-ab" in shown + printed


@pytest.mark.local_only  # the provider is the command's own (from its environment)
def test_a_refusal_whose_error_is_not_an_object_fails_the_test(
    gateway: Gateway, project: Path
) -> None:
    """A provider's 400 is the version's fault (a parameter its model refuses), whatever shape
    its error has: the test fails naming the answer, no traceback."""
    (project / "config/prompts/error-400-text.yaml").write_text(
        "name: error-400-text\nversion: 1.0.0\nmodel: error-400-text\ncontent: Hi.\n"
        "tests:\n  - id: one\n    expect: {contains: [Hi]}\n"
    )
    gateway("prompts", "push")
    fake = FakeProvider()
    try:
        env = {"GATEWAY_UPSTREAM_URL": fake.url}
        failed = gateway("prompts", "test", "error-400-text", "--json", ok=False, env=env)
    finally:
        fake.stop()
    assert "Traceback" not in failed.stderr
    run = orjson.loads(failed.stdout)
    assert "answered 400" in str(run)
