"""compose.yaml, deploy/kubernetes/ and the Dockerfile agree with the code: the env names it reads,
the port it listens on, the probe paths it serves, and the settings each container ends up with.

The files are parsed with PyYAML and each container's environment is loaded with the real
`settings.load` (the image's ENV, then the container's, as Docker and Kubernetes layer them), so a
name the code does not read, a port that differs or a store the replicas would not share fails
here. `docker compose config` and `kubectl kustomize` run too when they are installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import yaml
from typer.main import get_command

from gateway import __version__
from gateway.api.app import create_app
from gateway.cli import app as cli_app
from gateway.core.versions import parse_version
from gateway.errors import ConfigError
from gateway.files import load_prompt_files
from gateway.settings import ServerSettings, Settings, load
from gateway.upstream.routing import MOCK
from tests.conftest import ROOT

COMPOSE = ROOT / "compose.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
WORKDIR = ROOT  # the image's /app: the repository's config/ is copied there
GATEWAY_SERVICES = ("gateway", "prompts")  # compose services that run the gateway image
A_TOKEN = "deploy-test-token-0123456789"


class Recorder(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def names_the_code_reads() -> set[str]:
    """Every environment variable `settings.load` looks up (with the shipped config, the file's
    own ${VAR}s aside), and those the command line's options take (GATEWAY_URL, ...)."""
    env = Recorder({"GATEWAY_CONFIG": str(ROOT / "config/gateway.yaml")})
    load(None, env)
    options = get_command(cli_app).params
    from_cli = {name for p in options for name in _envvars(p)}
    return env.read | from_cli


def _envvars(param: object) -> list[str]:
    value = getattr(param, "envvar", None)
    return [value] if isinstance(value, str) else list(value or [])


# -- The Dockerfile --------------------------------------------------------------------------


def dockerfile() -> dict[str, Any]:
    """EXPOSE, ENV (joined continuation lines), CMD and the HEALTHCHECK command."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    env: dict[str, str] = {}
    found: dict[str, Any] = {"env": env, "expose": [], "cmd": None, "healthcheck": None}
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
        elif word == "EXPOSE":
            found["expose"] += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "CMD":
            found["cmd"] = orjson.loads(rest)
        elif word == "HEALTHCHECK":
            found["healthcheck"] = rest
    return found


IMAGE = dockerfile()


def test_dockerfile_listens_where_the_code_does() -> None:
    """The image exposes the default port, binds all interfaces, serves by default, and its
    health check asks /healthz on that port."""
    port = ServerSettings().port
    assert load(ROOT / "config/gateway.yaml", {}).server.port == port
    assert IMAGE["expose"] == [port]
    assert IMAGE["cmd"] == ["gateway", "serve"]
    assert f"127.0.0.1:{port}/healthz" in IMAGE["healthcheck"]
    settings = load(ROOT / "config/gateway.yaml", IMAGE["env"])
    assert settings.server.host == "0.0.0.0"


def test_dockerfile_env_names_are_read_by_the_code() -> None:
    """Every gateway variable the image sets is one the code reads."""
    ours = {name for name in IMAGE["env"] if not name.startswith("PYTHON")}
    assert ours, "the image sets no gateway variable"
    assert ours <= names_the_code_reads()


def test_probe_paths_are_served(tmp_path: Path) -> None:
    """/healthz and /readyz, which the probes and health checks ask, are routes of the app."""
    app = create_app(load(None, {"GATEWAY_STORE_URL": f"sqlite:///{tmp_path / 'g.db'}"}))
    paths = {route.path for route in app.routes}
    assert {"/healthz", "/readyz"} <= paths


# -- compose.yaml -----------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: object, shell: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR-default}, for a shell that sets `shell`."""
    text = str(value)
    assert "$$" not in text, "an escaped $ would need compose's own rules"
    return _INTERPOLATION.sub(lambda m: shell.get(m.group(1)) or (m.group(2) or ""), text)


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def compose_env(service: str, shell: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a service's container sees: the image's ENV, then the service's environment."""
    raw = compose()["services"][service].get("environment", {})
    assert isinstance(raw, dict), "environment as a mapping keeps the names checkable"
    return {**IMAGE["env"], **{k: interpolate(v, shell or {}) for k, v in raw.items()}}


def compose_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a service's container loads: config/gateway.yaml from /app, its env."""
    monkeypatch.chdir(WORKDIR)
    return load(None, compose_env(service))


def test_compose_env_names_are_read_by_the_code() -> None:
    """Every variable given to a gateway container in compose.yaml is one the code reads."""
    known = names_the_code_reads()
    for service in GATEWAY_SERVICES:
        given = set(compose()["services"][service].get("environment", {}))
        assert given <= known, f"{service}: {sorted(given - known)} are read by nothing"


def test_compose_gateway_port_and_health(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway listens on all interfaces on the port compose publishes, and the health check
    asks /healthz there."""
    settings = compose_settings("gateway", monkeypatch)
    service = compose()["services"]["gateway"]
    assert settings.server.host == "0.0.0.0"
    published = [str(p).rsplit(":", 1)[-1] for p in service["ports"]]
    assert published == [str(settings.server.port)]
    check = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.server.port}/healthz" in check


def test_compose_store_is_redis_with_an_append_only_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateway and job share the Redis service's registry; Redis writes its AOF to a named
    volume and has a health check the others wait on."""
    doc = compose()
    stores = {compose_settings(s, monkeypatch).store_url for s in GATEWAY_SERVICES}
    assert len(stores) == 1
    url = urlsplit(stores.pop())
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    redis = doc["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, target = redis["volumes"][0].split(":")[:2]
    assert (volume in doc["volumes"], target) == (True, "/data")
    assert "PONG" in " ".join(redis["healthcheck"]["test"])


def test_compose_start_order() -> None:
    """The gateway starts once Redis is healthy and the prompts job has completed; the job waits
    for Redis; both run the one image built from the Dockerfile."""
    services = compose()["services"]
    gateway, job = services["gateway"], services["prompts"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["depends_on"]["prompts"]["condition"] == "service_completed_successfully"
    assert job["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["build"] == job["build"] == "."
    assert gateway["image"] == job["image"]
    assert job.get("restart", "no") == "no"


def test_compose_traces_go_to_jaeger(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway exports spans to the Jaeger service's OTLP/HTTP port."""
    settings = compose_settings("gateway", monkeypatch)
    services = compose()["services"]
    assert settings.telemetry.tracing
    assert settings.telemetry.traces_endpoint == "http://jaeger:4318/v1/traces"
    assert "jaegertracing/all-in-one" in services["jaeger"]["image"]


def test_compose_works_offline_with_an_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set in the shell the provider is the built-in mock (the job's tests pass
    without a key) and the admin API has one admin token; the shell's values replace both."""
    settings = compose_settings("gateway", monkeypatch)
    assert [r.provider.base_url for r in settings.routes] == [MOCK]
    assert [t.role for t in settings.admin_tokens] == ["admin"]
    shell = {
        "GATEWAY_UPSTREAM_URL": "http://llm:8000/v1",
        "GATEWAY_ADMIN_TOKENS": f"me:admin:{A_TOKEN}",
    }
    mine = load(None, compose_env("gateway", shell))
    assert [r.provider.base_url for r in mine.routes] == ["http://llm:8000/v1"]
    assert [t.name for t in mine.admin_tokens] == ["me"]


def test_docker_compose_config_accepts_the_file() -> None:
    """`docker compose config -q` accepts compose.yaml (when Docker's compose plugin is here)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed; compose.yaml is checked by parsing it")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        first = (version.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"docker has no compose plugin: `docker compose version` says {first!r}")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


# -- The prompts job (compose and Kubernetes run the same script) ---------------------------


def compose_job_script() -> str:
    command = compose()["services"]["prompts"]["command"]
    assert command[:2] == ["sh", "-ec"], "sh -e: the job fails at its first failing command"
    script: str = command[2]
    return script


def test_job_script_covers_the_example_prompts() -> None:
    """The job pushes the prompts folder, tests every version of each prompt with tests, and
    promotes each prompt's newest version, forced exactly for those without tests."""
    script = compose_job_script()
    lines = script.splitlines()
    folder = load(ROOT / "config/gateway.yaml", {}).prompts_dir
    assert lines[0] == f"gateway prompts push {folder}"
    expected_tests, expected_promotions = [], []
    for file in sorted(load_prompt_files([ROOT / folder]), key=lambda f: f.name):
        if file.tests:
            expected_tests += [
                f"gateway prompts test {file.name} --version {d.version}" for d in file.drafts
            ]
        newest = max(file.drafts, key=lambda d: parse_version(d.version)).version
        force = "" if file.tests else " --force"
        expected_promotions.append(
            f"gateway prompts resolve {file.name} --env production --json >/dev/null 2>&1 "
            f"|| gateway prompts promote {file.name} {newest}{force}"
        )
    assert [line for line in lines if " test " in line] == expected_tests
    assert [line for line in lines if "promote" in line] == expected_promotions


def in_container(command: list[str], env: Mapping[str, str], tmp_path: Path) -> str:
    """Run `command` in /app with `env` only, as the container would, `gateway` being this
    checkout's command line; its stdout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "gateway"
    shim.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c "from gateway.cli import main; main()" "$@"\n'
    )
    shim.chmod(0o755)
    done = subprocess.run(
        command,
        env={
            **env,
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp_path),
        },
        cwd=WORKDIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def production(env: Mapping[str, str], tmp_path: Path) -> dict[str, str | None]:
    """Each prompt's active version in the store that `env` names."""
    rows = orjson.loads(in_container(["gateway", "prompts", "list", "--json"], env, tmp_path))
    return {row["name"]: row["active"] for row in rows}


def test_job_runs_offline_and_never_rolls_back(tmp_path: Path) -> None:
    """The job's script, run with the compose job's environment on the mock provider, promotes
    every example prompt; run again after someone promoted another version, it leaves it."""
    env = {
        **compose_env("prompts"),
        "GATEWAY_STORE_URL": f"sqlite:///{tmp_path / 'registry.db'}",  # instead of Redis
    }
    job = ["sh", "-ec", compose_job_script()]
    in_container(job, env, tmp_path)
    active = production(env, tmp_path)
    assert active == {"gateway-judge": "1.0.0", "release-notes": "1.0.0", "support-agent": "1.1.0"}
    in_container(["gateway", "prompts", "promote", "support-agent", "1.0.0"], env, tmp_path)
    in_container(job, env, tmp_path)
    assert production(env, tmp_path)["support-agent"] == "1.0.0"


# -- Kubernetes ----------------------------------------------------------------------------------


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object under deploy/kubernetes/, by (kind, name)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} is defined twice"
                objects[key] = doc
    return objects


OBJECTS = manifests()


def one(kind: str) -> dict[str, Any]:
    found = [doc for (k, _), doc in OBJECTS.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(kind)["spec"]["template"]["spec"]
    return spec


def container(kind: str) -> dict[str, Any]:
    (only,) = pod(kind)["containers"]
    return dict(only)


def secret_values() -> dict[str, str]:
    values: dict[str, str] = one("Secret")["stringData"]
    return values


def kube_env(kind: str, secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the container sees: the image's ENV, then its env (Secret values from `secrets`,
    default the shipped Secret; an optional key that is absent is left out, as Kubernetes does)."""
    secrets = secret_values() if secrets is None else secrets
    env = dict(IMAGE["env"])
    for item in container(kind).get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == one("Secret")["metadata"]["name"]
        if ref["key"] in secrets:
            env[item["name"]] = secrets[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{kind}: {ref['key']} is not in the Secret"
    return env


def kube_settings(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container loads: the ConfigMap's file where it is mounted, its env, with
    a valid admin token in place of the Secret's placeholders."""
    spec, box = pod(kind), container(kind)
    env = kube_env(kind, {**secret_values(), "GATEWAY_ADMIN_TOKENS": f"ops:admin:{A_TOKEN}"})
    config = Path(env["GATEWAY_CONFIG"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = next(m for m in box["volumeMounts"] if m["mountPath"] == str(config.parent))
    config_map = volumes[mount["name"]]["configMap"]["name"]
    text = OBJECTS["ConfigMap", config_map]["data"][config.name]
    (tmp_path / config.name).write_text(text)
    monkeypatch.chdir(WORKDIR)
    return load(None, {**env, "GATEWAY_CONFIG": str(tmp_path / config.name)})


def port_number(box: Mapping[str, Any], port: int | str) -> int:
    """A port given by number or by the container's port name."""
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in box["ports"] if p["name"] == port))


def test_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/kubernetes` applies every file there, and only those."""
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)


def test_kubernetes_env_names_are_read_by_the_code() -> None:
    """Every variable given to the gateway and job containers, and every key of the Secret, is
    one the code reads."""
    known = names_the_code_reads()
    for kind in ("Deployment", "Job"):
        given = {item["name"] for item in container(kind).get("env", [])}
        assert given <= known, f"{kind}: {sorted(given - known)} are read by nothing"
    assert set(secret_values()) <= known


def test_gateway_deployment_ports_and_probes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several replicas listen on all interfaces on the container port, which the probes (liveness
    /healthz, readiness /readyz) and the Service target."""
    deployment, box = one("Deployment"), container("Deployment")
    settings = kube_settings("Deployment", tmp_path, monkeypatch)
    assert deployment["spec"]["replicas"] >= 2
    assert settings.server.host == "0.0.0.0"
    assert [p["containerPort"] for p in box["ports"]] == [settings.server.port]
    live, ready = box["livenessProbe"]["httpGet"], box["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    assert port_number(box, live["port"]) == port_number(box, ready["port"]) == settings.server.port
    service = OBJECTS["Service", deployment["metadata"]["name"]]["spec"]
    assert (
        service["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [port_number(box, p["targetPort"]) for p in service["ports"]] == [settings.server.port]


def test_replicas_and_job_share_the_redis_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateway pods and the prompts Job load the same Redis store URL, naming the Redis Service
    and its port; Redis keeps an AOF on a persistent volume."""
    stores = {
        kube_settings(kind, tmp_path, monkeypatch).store_url for kind in ("Deployment", "Job")
    }
    assert len(stores) == 1
    url = urlsplit(stores.pop())
    assert url.scheme == "redis"
    service = OBJECTS["Service", str(url.hostname)]["spec"]
    redis_set = one("StatefulSet")
    redis_box = dict(redis_set["spec"]["template"]["spec"]["containers"][0])
    assert (
        service["selector"].items() <= redis_set["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [p["port"] for p in service["ports"]] == [url.port]
    assert port_number(redis_box, service["ports"][0]["targetPort"]) == url.port
    command = redis_box["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    claims = {c["metadata"]["name"] for c in redis_set["spec"]["volumeClaimTemplates"]}
    assert {m["name"] for m in redis_box["volumeMounts"] if m["mountPath"] == "/data"} <= claims


def test_every_container_has_requests_and_limits() -> None:
    """Gateway, Redis and the Job ask for CPU and memory and are capped."""
    for kind in ("Deployment", "StatefulSet", "Job"):
        for box in pod(kind)["containers"]:
            resources = box["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{kind} {bound}"


def test_secret_placeholders_stop_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped Secret's admin tokens are refused at start-up, so a cluster never runs with a
    token printed in this repository; the admin tokens and provider key come from the Secret."""
    env = kube_env("Deployment")
    assert env["GATEWAY_ADMIN_TOKENS"] == secret_values()["GATEWAY_ADMIN_TOKENS"]
    monkeypatch.chdir(WORKDIR)
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        load(None, {k: v for k, v in env.items() if k != "GATEWAY_CONFIG"})
    assert "OPENAI_API_KEY" in kube_env("Job")


def test_job_matches_compose_and_the_image() -> None:
    """The Kubernetes Job runs the compose job's script with the gateway's image, once."""
    job = one("Job")
    box = container("Job")
    assert box["command"][:2] == ["sh", "-ec"]
    assert box["command"][2] == compose_job_script()
    assert box["image"] == container("Deployment")["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


def test_image_tag_is_the_package_version() -> None:
    """The manifests run the image of this version (`docker build -t prompt-gateway:X.Y.Z .`)."""
    for kind in ("Deployment", "Job"):
        assert container(kind)["image"] == f"prompt-gateway:{__version__}"


def test_kubectl_kustomize_renders_every_object() -> None:
    """`kubectl kustomize` (offline) renders exactly the objects parsed here."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the manifests are checked by parsing them")
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout) if d}
    assert rendered == set(OBJECTS)
