"""Settings: frozen dataclasses, and `load`, the only reader of the config file and the environment.

Precedence, highest first: environment variables, the config file, the defaults below. `${VAR}` in
the file expands from the environment, so secrets never sit in it. Any invalid value stops start-up
with a ConfigError that names the file, the key and what is wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import unquote, urlsplit

import orjson
import yaml

from gateway.core.model import ENVIRONMENTS, Environment
from gateway.core.pricing import Price, PriceTable
from gateway.core.resolution import Overrides
from gateway.errors import ConfigError
from gateway.files import yaml_problem
from gateway.upstream.routing import MOCK, Provider, Route

DEFAULT_CONFIG = Path("config/gateway.yaml")
_VAR = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class PromotionSettings:
    """Rules for making a version active."""

    threshold: float = 0.9
    """Lowest pass rate of a version's last test run that allows `promote` without --force."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How `gateway serve` listens."""

    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = 8080
    """TCP port."""
    workers: int = 1
    """Worker processes; each holds its own snapshot and upstream connection pool."""
    max_body_bytes: int = 10 * 1024 * 1024
    """Largest JSON request body accepted (read whole); larger ones get 413 request_too_large."""
    max_upload_bytes: int = 512 * 1024 * 1024
    """Largest other body (multipart uploads, files), streamed to the provider as it arrives."""
    header_timeout: float = 10.0
    """Seconds a client has from connecting (or from a kept-alive request's first byte) to the
    end of its request head; then 408 request_timeout and the connection is closed."""
    max_header_bytes: int = 32 * 1024
    """Bytes of request line and header fields together; more is 431, never forwarded."""
    max_headers: int = 100
    """Header fields in one request; more is 431, never forwarded."""
    body_timeout: float = 30.0
    """Seconds a client has from the end of its request head to the body's first bytes, and
    between two pieces of the body; then 408 request_timeout and the connection is closed. A
    client that sends steadily, however slowly, is not cut."""
    max_buffered_bytes: int = 256 * 1024 * 1024
    """Bytes of JSON request bodies one worker holds at once (each read whole, up to
    max_body_bytes); a body that would pass it gets 503 server_busy with retry-after."""
    max_connections: int | None = None
    """Open client connections per worker; None (`auto`) sizes it from the file-descriptor limit
    (see gateway.api.server.auto_max_connections). Past it the longest-waiting connection without
    a request in progress is closed, else the newcomer gets 503 too_many_connections."""


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Connections to providers."""

    connect_timeout: float = 10.0
    """Seconds to open a connection to a provider before answering 502."""
    read_timeout: float = 600.0
    """Seconds to wait for the provider's next bytes before answering 504."""
    total_timeout: float = 900.0
    """Seconds a whole provider call may take, answer and stream included, before 504 (a
    provider that trickles bytes forever holds a connection and a client otherwise)."""
    pool_size: int = 512
    """Open connections per worker, over all providers. Past it a call waits for a free one (an
    idle one to another provider is closed to make room), until its `total_timeout` (then 504
    naming this key)."""


DEFAULT_UPSTREAM_URL = "https://api.openai.com/v1"
DEFAULT_PRICES = Path(__file__).parent / "prices.yaml"
"""The price table that ships in the package (package data): found wherever `gateway serve`
runs, not only in a checkout."""


SpanKind = Literal["llm", "proxy"]
SPAN_KINDS: tuple[SpanKind, ...] = ("llm", "proxy")


@dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Tracing, read from the standard OTEL_* variables (the OTel SDK reads the rest itself)."""

    tracing: bool = False
    """Spans are exported: an OTLP endpoint is set and tracing is not disabled."""
    traces_endpoint: str | None = None
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces."""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, e.g. an API key of the tracing backend."""
    resource: tuple[tuple[str, str], ...] = ()
    """Resource attributes: OTEL_RESOURCE_ATTRIBUTES, and service.name from OTEL_SERVICE_NAME
    (default prompt-gateway)."""
    sampler: tuple[str | None, str | None] = (None, None)
    """OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG."""
    schedule_delay: float = 5.0
    """OTEL_BSP_SCHEDULE_DELAY (ms in the variable): the longest a span waits to be sent."""
    max_queue: int = 2048
    """OTEL_BSP_MAX_QUEUE_SIZE: spans held at most; more are dropped and counted."""
    max_batch: int = 512
    """OTEL_BSP_MAX_EXPORT_BATCH_SIZE: spans per export request."""
    export_timeout: float = 10.0
    """OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT, in seconds as the Python SDK reads it."""
    tiktoken_cache: str | None = None
    """TIKTOKEN_CACHE_DIR: a folder of tiktoken encodings to use before the packaged ones."""
    capture_content: bool = False
    """OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true: record messages and variables."""
    span_kind: SpanKind = "llm"
    """telemetry.span_kind (GATEWAY_TELEMETRY_SPAN_KIND): `llm`, the gateway's span is the LLM
    call (OpenInference LLM/EMBEDDING, tokens and cost for backends to sum); `proxy`, it is a hop
    (OpenInference CHAIN; no llm.* model, parameters, tokens or cost; usage as gateway.usage.*),
    for applications that trace their LLM calls themselves, whose backends would otherwise count
    each call twice."""


Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")
"""Admin roles, each including the ones before it (PRODUCT §6.1)."""
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class AdminToken:
    """One bearer token of the admin API. Only its SHA-256 is kept, never the token itself."""

    name: str
    """Who the token belongs to: the actor of every write made with it."""
    role: Role
    """viewer, editor or admin."""
    token_sha256: bytes = field(repr=False)
    """The token's SHA-256 digest (32 bytes)."""


@dataclass(frozen=True, slots=True)
class ExperimentSettings:
    """How experiments are recorded and judged (PRODUCT §11)."""

    alpha: float = 0.05
    """Significance level: a difference counts when its p-value is below it."""
    min_users_per_variant: int = 100
    """Units with a value each arm needs before a recommendation other than keep_running."""
    queue_size: int = 100_000
    """Exposures and feedback waiting to be written, at most; more are dropped and counted."""
    flush_interval: float = 0.2
    """Seconds a recorded exposure may wait before its batch is written."""


@dataclass(frozen=True, slots=True)
class AdoptionSettings:
    """Zero-code adoption of hard-coded prompts (PRODUCT §14)."""

    capture: bool = False
    """Keep the system prompts of unmanaged calls (fingerprint, count, first and last seen,
    models, one sample text) for `gateway adoption candidates`. Off by default."""
    max_candidates: int = 1000
    """Captured prompts kept in the store, at most; the least recently seen are dropped."""
    flush_interval: float = 1.0
    """Seconds captured sightings may wait in memory before their batch is written."""
    queue_size: int = 10_000
    """Distinct texts waiting to be written, at most; more are dropped and counted."""


@dataclass(frozen=True, slots=True)
class UISettings:
    """The web console under /ui (PRODUCT §6.3)."""

    session_secret: bytes | None = field(default=None, repr=False)
    """Key that signs console session cookies. None: a random one made at each start, so a
    restart (or another worker or replica) signs everyone out; set it (16+ characters) to keep
    sessions across restarts and workers."""
    session_max_age: int = 8 * 3600
    """Seconds a console session lasts after sign-in."""
    trace_url: str | None = None
    """Link to the tracing backend for a trace id: a URL with `{trace_id}` (and, optionally,
    `{request_id}`), e.g. http://jaeger:16686/trace/{trace_id}. None: ids are plain text."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server and the command line read from config and environment."""

    env: Environment = "production"
    """Which environment this process serves: development, staging or production."""
    store_url: str = "sqlite:///gateway.db"
    """Registry store: `sqlite:///path.db` (embedded) or `redis://host:port/db` (shared)."""
    snapshot_path: str | None = None
    """File holding this process's last good registry snapshot, served when it starts while
    the store is down (PRODUCT §15). None: the default, `<the SQLite file>.snapshot.json`
    beside a SQLite store, `gateway.snapshot.json` in the working directory for Redis."""
    admin_tokens: tuple[AdminToken, ...] = ()
    """Bearer tokens accepted on /admin, with their roles. Empty: the admin API refuses everyone."""
    prompts_dir: str = "config/prompts"
    """Folder that `gateway prompts push` reads when given no path."""
    promotion: PromotionSettings = field(default_factory=PromotionSettings)
    """Promotion gate."""
    experiments: ExperimentSettings = field(default_factory=ExperimentSettings)
    """Experiment recording and statistics."""
    adoption: AdoptionSettings = field(default_factory=AdoptionSettings)
    """Capture of hard-coded system prompts for adoption."""
    overrides: Overrides = field(default_factory=lambda: Overrides({}, {}))
    """Version overrides: PROMPT_OVERRIDES for this process, then environments.<env>.overrides."""
    server: ServerSettings = field(default_factory=ServerSettings)
    """The HTTP server."""
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    """Provider connections."""
    routes: tuple[Route, ...] = (Route("*", Provider("openai", DEFAULT_UPSTREAM_URL)),)
    """Model globs to providers, first match wins."""
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    """Tracing and content capture."""
    test_api_key: str | None = field(default=None, repr=False)
    """OPENAI_API_KEY: what `gateway prompts test` sends to a provider without a key of its own."""
    prices: PriceTable = field(default_factory=lambda: PriceTable({}))
    """Model prices for gateway.cost.usd (prices_file, default the packaged gateway/prices.yaml)."""
    ui: UISettings = field(default_factory=UISettings)
    """The web console."""
    source: str | None = None
    """The config file these settings came from, if any."""

    def sources(self, cwd: Path) -> str:
        """Where the config came from, or where it was looked for: for messages that must say
        why a store or registry is the one it is (`cwd` is the working directory)."""
        if self.source is not None:
            return f"config {self.source}"
        return (
            f"no config file: {DEFAULT_CONFIG} is not in {cwd}, and neither --config nor "
            "GATEWAY_CONFIG is set"
        )

    def sqlite_path(self) -> Path | None:
        """The SQLite file the store URL names (relative to the working directory), if any."""
        if self.store_url.startswith("sqlite:///"):
            return Path(self.store_url.removeprefix("sqlite:///"))
        return None


def load(path: str | Path | None, environ: Mapping[str, str]) -> Settings:
    """Read the config file (`path`, else GATEWAY_CONFIG, else config/gateway.yaml if present)."""
    chosen = path or environ.get("GATEWAY_CONFIG")
    config_path = Path(chosen) if chosen else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    raw: dict[str, Any] = {}
    where = "defaults"
    if config_path is not None:
        where = str(config_path)
        raw = _read_file(config_path, environ)
    return _build(raw, environ, where, str(config_path) if config_path else None)


def _read_file(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc.strerror}.") from exc

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML{yaml_problem(exc)}.") from exc
    doc = _expand(doc, path, environ)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, not {type(doc).__name__}."
        )
    return doc


def _expand(value: Any, path: Path, environ: Mapping[str, str]) -> Any:
    """Replace ${VAR} in every string value (comments and keys are left alone)."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"{path}: ${{{name}}} is used but that variable is unset.")
            return environ[name]

        return _VAR.sub(lookup, value)
    if isinstance(value, list):
        return [_expand(v, path, environ) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, path, environ) for k, v in value.items()}
    return value


_KEYS = {
    "env",
    "store_url",
    "snapshot_path",
    "admin_tokens",
    "prompts_dir",
    "promotion",
    "environments",
    "server",
    "upstream",
    "providers",
    "routes",
    "prices_file",
    "model_quirks",
    "experiments",
    "telemetry",
    "adoption",
    "ui",
}


def _build(
    raw: dict[str, Any], environ: Mapping[str, str], where: str, source: str | None
) -> Settings:
    _no_unknown(raw, _KEYS, "", where)
    env = _choice(
        *_pick(environ, "GATEWAY_ENV", raw, "env", "production", where, allowed=ENVIRONMENTS)
    )
    store_url = _store_url(
        *_pick(environ, "GATEWAY_STORE_URL", raw, "store_url", "sqlite:///gateway.db", where)
    )
    snapshot_path = _pick(environ, "GATEWAY_SNAPSHOT_PATH", raw, "snapshot_path", None, where)
    if snapshot_path[0] is not None:
        _string(*snapshot_path)
    tokens = _admin_tokens(raw, environ, where)
    prompts_dir = _string(raw.get("prompts_dir", "config/prompts"), "prompts_dir", where)

    promotion_raw = _mapping(raw.get("promotion", {}), "promotion", where)
    _no_unknown(promotion_raw, {"threshold"}, "promotion.", where)
    threshold = _number(
        *_pick(
            environ,
            "GATEWAY_PROMOTION_THRESHOLD",
            promotion_raw,
            "threshold",
            0.9,
            where,
            prefix="promotion.",
        ),
        low=0.0,
        high=1.0,
    )

    by_env: dict[str, dict[str, str]] = {}
    environments = _mapping(raw.get("environments", {}), "environments", where)
    for name, section in environments.items():
        key = f"environments.{name}"
        _choice(name, ENVIRONMENTS, key, where)
        section = _mapping(section if section is not None else {}, key, where)
        _no_unknown(section, {"overrides"}, key + ".", where)
        by_env[name] = _overrides(section.get("overrides", {}), key + ".overrides", where)
    process = _process_overrides(environ.get("PROMPT_OVERRIDES"))

    server_raw = _mapping(raw.get("server", {}), "server", where)
    _no_unknown(
        server_raw,
        {
            "host",
            "port",
            "workers",
            "max_body_bytes",
            "max_upload_bytes",
            "header_timeout",
            "max_header_bytes",
            "max_headers",
            "body_timeout",
            "max_buffered_bytes",
            "max_connections",
        },
        "server.",
        where,
    )

    def server_int(key: str, env: str, default: int, high: int, low: int = 1) -> int:
        picked = _pick(environ, env, server_raw, key, default, where, prefix="server.")
        return _integer(*picked, low=low, high=high)

    connections = _pick(
        environ,
        "GATEWAY_MAX_CONNECTIONS",
        server_raw,
        "max_connections",
        "auto",
        where,
        prefix="server.",
    )

    server = ServerSettings(
        host=_string(
            *_pick(
                environ, "GATEWAY_HOST", server_raw, "host", "127.0.0.1", where, prefix="server."
            )
        ),
        port=server_int("port", "GATEWAY_PORT", 8080, 65535),
        workers=server_int("workers", "GATEWAY_WORKERS", 1, 256),
        max_body_bytes=server_int("max_body_bytes", "GATEWAY_MAX_BODY_BYTES", 10 << 20, 1 << 31),
        max_upload_bytes=server_int(
            "max_upload_bytes", "GATEWAY_MAX_UPLOAD_BYTES", 512 << 20, 1 << 40
        ),
        header_timeout=_number(
            *_pick(
                environ,
                "GATEWAY_HEADER_TIMEOUT",
                server_raw,
                "header_timeout",
                10.0,
                where,
                prefix="server.",
            ),
            low=0.1,
            high=3600,
        ),
        max_header_bytes=server_int(
            "max_header_bytes", "GATEWAY_MAX_HEADER_BYTES", 32 << 10, 16 << 20, low=1024
        ),
        max_headers=server_int("max_headers", "GATEWAY_MAX_HEADERS", 100, 100_000),
        body_timeout=_number(
            *_pick(
                environ,
                "GATEWAY_BODY_TIMEOUT",
                server_raw,
                "body_timeout",
                30.0,
                where,
                prefix="server.",
            ),
            low=0.1,
            high=3600,
        ),
        max_buffered_bytes=server_int(
            "max_buffered_bytes", "GATEWAY_MAX_BUFFERED_BYTES", 256 << 20, 1 << 40, low=1 << 20
        ),
        max_connections=_connections(*connections),
    )
    if server.max_buffered_bytes < server.max_body_bytes:
        raise ConfigError(
            f"{where}: server.max_buffered_bytes ({server.max_buffered_bytes}) is under "
            f"server.max_body_bytes ({server.max_body_bytes}), so a body of the largest size "
            "accepted could never be read; raise the first or lower the second."
        )
    upstream_raw = _mapping(raw.get("upstream", {}), "upstream", where)
    _no_unknown(
        upstream_raw,
        {"connect_timeout", "read_timeout", "total_timeout", "pool_size"},
        "upstream.",
        where,
    )

    def upstream_number(
        key: str, env: str | None, default: float, high: float, low: float = 0.001
    ) -> float:
        picked = _pick(environ, env, upstream_raw, key, default, where, prefix="upstream.")
        return _number(*picked, low=low, high=high)

    upstream = UpstreamSettings(
        connect_timeout=upstream_number("connect_timeout", "GATEWAY_CONNECT_TIMEOUT", 10.0, 3600),
        read_timeout=upstream_number("read_timeout", "GATEWAY_READ_TIMEOUT", 600.0, 86400),
        total_timeout=upstream_number("total_timeout", "GATEWAY_TOTAL_TIMEOUT", 900.0, 86400),
        pool_size=int(upstream_number("pool_size", None, 512, 100_000, low=1)),
    )
    experiments = _experiments(raw, environ, where)
    adoption = _adoption(raw, environ, where)
    routes = _routes(raw, environ, where)
    prices = _prices(environ.get("GATEWAY_PRICES_FILE", raw.get("prices_file")), where)
    telemetry_raw = _mapping(raw.get("telemetry", {}), "telemetry", where)
    _no_unknown(telemetry_raw, {"span_kind"}, "telemetry.", where)
    span_kind = _choice(
        *_pick(
            environ,
            "GATEWAY_TELEMETRY_SPAN_KIND",
            telemetry_raw,
            "span_kind",
            "llm",
            where,
            prefix="telemetry.",
            allowed=SPAN_KINDS,
        )
    )
    telemetry = replace(_telemetry(environ), span_kind=cast(SpanKind, span_kind))
    ui = _ui(raw, environ, where)

    return Settings(
        env=cast(Environment, env),
        store_url=store_url,
        snapshot_path=snapshot_path[0],
        admin_tokens=tokens,
        prompts_dir=prompts_dir,
        promotion=PromotionSettings(threshold=threshold),
        experiments=experiments,
        adoption=adoption,
        overrides=Overrides(process, by_env),
        server=server,
        upstream=upstream,
        routes=routes,
        telemetry=telemetry,
        test_api_key=environ.get("OPENAI_API_KEY") or None,
        prices=prices,
        ui=ui,
        source=source,
    )


def snapshot_file_for(store_url: str) -> str:
    """The default snapshot file of a store: beside a SQLite file (`gateway.db` ->
    `gateway.db.snapshot.json`), else `gateway.snapshot.json` in the working directory."""
    if store_url.startswith("sqlite:///"):
        return store_url.removeprefix("sqlite:///") + ".snapshot.json"
    return "gateway.snapshot.json"


def _routes(raw: Mapping[str, Any], environ: Mapping[str, str], where: str) -> tuple[Route, ...]:
    """GATEWAY_UPSTREAM_URL names one provider for every model when the file names none.

    Both at once is refused: a variable left over from a shell would otherwise route every
    model past the file's providers and routes without a word. So is GATEWAY_UPSTREAM_API_KEY
    with providers: unless a provider's api_key is that key (`${GATEWAY_UPSTREAM_API_KEY}`):
    it would otherwise be ignored without a word, and every call sent without the key.
    """
    from_env = environ.get("GATEWAY_UPSTREAM_URL") or None  # set but empty counts as unset
    if from_env is not None and "providers" in raw:
        raise ConfigError(
            f"{where}: providers: is set, and so is GATEWAY_UPSTREAM_URL ({from_env.split('?')[0]}"
            "); both name the providers. Unset GATEWAY_UPSTREAM_URL to use the file's providers "
            "and routes, or remove providers: to send every model to that URL."
        )
    if from_env is not None or "providers" not in raw:
        url = from_env or DEFAULT_UPSTREAM_URL
        _provider_url(url, "GATEWAY_UPSTREAM_URL", where)
        name = "mock" if url == MOCK else "openai" if url == DEFAULT_UPSTREAM_URL else "default"
        key = environ.get("GATEWAY_UPSTREAM_API_KEY") or None
        quirks = _reasoning_globs(raw.get("model_quirks"), "model_quirks", where)
        return (Route("*", Provider(name, url.rstrip("/"), key, reasoning_models=quirks)),)
    shared_quirks = _reasoning_globs(raw.get("model_quirks"), "model_quirks", where)
    providers: dict[str, Provider] = {}
    for name, section in _mapping(raw["providers"], "providers", where).items():
        key = f"providers.{name}"
        section = _mapping(section, key, where)
        _no_unknown(
            section, {"base_url", "api_key", "stream_usage", "model_quirks"}, key + ".", where
        )
        url = _string(section.get("base_url"), key + ".base_url", where)
        _provider_url(url, key + ".base_url", where)
        api_key = section.get("api_key")
        if api_key is not None:
            api_key = _string(api_key, key + ".api_key", where) if api_key != "" else None
        stream_usage = section.get("stream_usage", True)
        if not isinstance(stream_usage, bool):
            raise ConfigError(f"{where}: {key}.stream_usage must be true or false.")
        quirks = _reasoning_globs(section.get("model_quirks"), key + ".model_quirks", where)
        providers[str(name)] = Provider(
            str(name),
            url.rstrip("/"),
            api_key,
            stream_usage=stream_usage,
            reasoning_models=shared_quirks + quirks,
        )
    if not providers:
        raise ConfigError(f"{where}: providers is empty; name at least one provider.")
    env_key = environ.get("GATEWAY_UPSTREAM_API_KEY") or None  # set but empty counts as unset
    if env_key is not None and all(p.api_key != env_key for p in providers.values()):
        raise ConfigError(
            f"{where}: providers: is set, and so is GATEWAY_UPSTREAM_API_KEY, which only keys "
            "the one provider used without providers:, so no provider would use it. Unset "
            "GATEWAY_UPSTREAM_API_KEY, or give it to a provider in the file: "
            "api_key: ${GATEWAY_UPSTREAM_API_KEY}."
        )
    routes_raw = raw.get("routes") or [{"model": "*", "provider": next(iter(providers))}]
    routes = []
    for i, item in enumerate(_list(routes_raw, "routes", where)):
        key = f"routes[{i}]"
        item = _mapping(item, key, where)
        _no_unknown(item, {"model", "provider"}, key + ".", where)
        pattern = _string(item.get("model"), key + ".model", where)
        provider = _string(item.get("provider"), key + ".provider", where)
        if provider not in providers:
            raise ConfigError(
                f"{where}: {key}.provider {provider!r} is not one of the providers "
                f"({', '.join(providers)})."
            )
        routes.append(Route(pattern, providers[provider]))
    return tuple(routes)


def _admin_tokens(
    raw: Mapping[str, Any], environ: Mapping[str, str], where: str
) -> tuple[AdminToken, ...]:
    """`admin_tokens: [{name, role, token | token_sha256}]`, or GATEWAY_ADMIN_TOKENS
    (`name:role:token,...`), which wins. Errors name the entry, never the token."""
    entries: list[tuple[str, object, object, object]] = []
    if "GATEWAY_ADMIN_TOKENS" in environ:
        source = "GATEWAY_ADMIN_TOKENS"
        for i, item in enumerate(t.strip() for t in environ[source].split(",")):
            if not item:
                continue
            parts = item.split(":", 2)
            if len(parts) != 3:
                raise ConfigError(
                    f"{source}: entry {i + 1} must be name:role:token (the token is not shown)."
                )
            entries.append((f"{source} entry {i + 1}", parts[0], parts[1], parts[2]))
        items: list[tuple[str, object, object, object, object]] = [
            (key, name, role, token, None) for key, name, role, token in entries
        ]
    else:
        items = []
        for i, item in enumerate(_list(raw.get("admin_tokens", []), "admin_tokens", where)):
            key = f"{where}: admin_tokens[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{key} must be a mapping with name, role and token.")
            _no_unknown(item, {"name", "role", "token", "token_sha256"}, "", key)
            items.append(
                (
                    key,
                    item.get("name"),
                    item.get("role"),
                    item.get("token"),
                    item.get("token_sha256"),
                )
            )
    tokens: list[AdminToken] = []
    for key, name, role, token, digest in items:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}: name must be a non-empty string.")
        if role not in ROLES:
            raise ConfigError(
                f"{key} ({name}): role must be one of {', '.join(ROLES)}, not {role!r}."
            )
        if (token is None) == (digest is None):
            raise ConfigError(f"{key} ({name}): give exactly one of token and token_sha256.")
        if token is not None and not isinstance(token, str):
            raise ConfigError(
                f"{key} ({name}): the token must be a string; quote it in YAML (a token of "
                "digits only is read as a number)."
            )
        if token is not None:
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"{key} ({name}): the token is shorter than {MIN_TOKEN_LENGTH} characters; "
                    "generate one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
                )
            sha = hashlib.sha256(token.encode()).digest()
        else:
            if not isinstance(digest, str) or re.fullmatch(r"[0-9a-fA-F]{64}", digest) is None:
                raise ConfigError(f"{key} ({name}): token_sha256 must be 64 hex digits.")
            sha = bytes.fromhex(digest)
        if any(t.name == name for t in tokens):
            raise ConfigError(f"{key}: the name {name!r} is used twice; names are audit actors.")
        twin = next((t for t in tokens if hmac.compare_digest(t.token_sha256, sha)), None)
        if twin is not None:
            raise ConfigError(
                f"{key} ({name}): the same token is already given to {twin.name!r}; one token "
                "would act under two names and roles. Give each entry its own token."
            )
        tokens.append(AdminToken(name, role, sha))
    return tuple(tokens)


def _experiments(
    raw: Mapping[str, Any], environ: Mapping[str, str], where: str
) -> ExperimentSettings:
    section = _mapping(raw.get("experiments", {}), "experiments", where)
    _no_unknown(
        section,
        {"alpha", "min_users_per_variant", "queue_size", "flush_interval"},
        "experiments.",
        where,
    )

    def value(key: str, env: str, default: float, low: float, high: float) -> float:
        picked = _pick(environ, env, section, key, default, where, prefix="experiments.")
        return _number(*picked, low=low, high=high)

    return ExperimentSettings(
        alpha=value("alpha", "GATEWAY_EXPERIMENTS_ALPHA", 0.05, 1e-6, 0.5),
        min_users_per_variant=int(
            value("min_users_per_variant", "GATEWAY_EXPERIMENTS_MIN_USERS", 100, 2, 1e9)
        ),
        queue_size=int(value("queue_size", "GATEWAY_EXPERIMENTS_QUEUE_SIZE", 100_000, 1, 1e8)),
        flush_interval=value(
            "flush_interval", "GATEWAY_EXPERIMENTS_FLUSH_INTERVAL", 0.2, 0.001, 60
        ),
    )


def _adoption(raw: Mapping[str, Any], environ: Mapping[str, str], where: str) -> AdoptionSettings:
    section = _mapping(raw.get("adoption", {}), "adoption", where)
    _no_unknown(
        section, {"capture", "max_candidates", "flush_interval", "queue_size"}, "adoption.", where
    )
    capture, key, place = _pick(
        environ, "GATEWAY_ADOPTION_CAPTURE", section, "capture", False, where, prefix="adoption."
    )
    if isinstance(capture, str) and capture.lower() in ("true", "1", "yes", "false", "0", "no"):
        capture = capture.lower() in ("true", "1", "yes")
    if not isinstance(capture, bool):
        raise ConfigError(f"{place}: {key} must be true or false, not {capture!r}.")

    def value(key: str, env: str | None, default: float, low: float, high: float) -> float:
        picked = _pick(environ, env, section, key, default, where, prefix="adoption.")
        return _number(*picked, low=low, high=high)

    return AdoptionSettings(
        capture=capture,
        max_candidates=int(
            value("max_candidates", "GATEWAY_ADOPTION_MAX_CANDIDATES", 1000, 1, 1_000_000)
        ),
        flush_interval=value("flush_interval", None, 1.0, 0.001, 60),
        queue_size=int(value("queue_size", None, 10_000, 1, 1_000_000)),
    )


def _ui(raw: Mapping[str, Any], environ: Mapping[str, str], where: str) -> UISettings:
    section = _mapping(raw.get("ui", {}) or {}, "ui", where)
    _no_unknown(section, {"session_secret", "session_max_age", "trace_url"}, "ui.", where)
    secret = _pick(
        environ, "GATEWAY_UI_SESSION_SECRET", section, "session_secret", None, where, prefix="ui."
    )
    if secret[0] is not None and len(_string(*secret)) < 16:
        raise ConfigError(
            f"{secret[2]}: {secret[1]} must be at least 16 characters (a random string; "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one)."
        )
    max_age = _pick(
        environ,
        "GATEWAY_UI_SESSION_MAX_AGE",
        section,
        "session_max_age",
        8 * 3600,
        where,
        prefix="ui.",
    )
    trace_url = _pick(
        environ, "GATEWAY_UI_TRACE_URL", section, "trace_url", None, where, prefix="ui."
    )
    if trace_url[0] is not None:
        url = _string(*trace_url)
        if "{trace_id}" not in url and "{request_id}" not in url:
            raise ConfigError(
                f"{trace_url[2]}: {trace_url[1]} must hold {{trace_id}} (or {{request_id}}), "
                f"e.g. http://jaeger:16686/trace/{{trace_id}}, not {url!r}."
            )
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{trace_url[2]}: {trace_url[1]} must be an http:// or https:// URL, not {url!r}."
            )
    return UISettings(
        session_secret=secret[0].encode() if secret[0] is not None else None,
        session_max_age=_integer(*max_age, low=60, high=30 * 86400),
        trace_url=trace_url[0],
    )


def _reasoning_globs(value: object, key: str, where: str) -> tuple[str, ...]:
    """`model_quirks: {reasoning: [glob, ...]}`: models that take reasoning-model parameters."""
    if value is None:
        return ()
    section = _mapping(value, key, where)
    _no_unknown(section, {"reasoning"}, key + ".", where)
    globs = _list(section.get("reasoning", []), key + ".reasoning", where)
    return tuple(_string(g, f"{key}.reasoning[]", where) for g in globs)


def _telemetry(environ: Mapping[str, str]) -> TelemetrySettings:
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
    if endpoint is None and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or (
        environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none"
    )
    raw_headers = environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers = _pairs(raw_headers, lower=True)
    resource = dict(_pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""), lower=False))
    resource["service.name"] = environ.get("OTEL_SERVICE_NAME") or resource.get(
        "service.name", "prompt-gateway"
    )
    cache = environ.get("TIKTOKEN_CACHE_DIR") or environ.get("DATA_GYM_CACHE_DIR") or None
    capture = environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    timeout = environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or environ.get(
        "OTEL_EXPORTER_OTLP_TIMEOUT"
    )
    return TelemetrySettings(
        sampler=(environ.get("OTEL_TRACES_SAMPLER"), environ.get("OTEL_TRACES_SAMPLER_ARG")),
        schedule_delay=_env_number(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
        max_queue=int(_env_number(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)),
        max_batch=int(_env_number(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)),
        # The Python SDK reads this variable in seconds; keep that reading for compatibility.
        export_timeout=float(timeout) if timeout and _is_number(timeout) else 10.0,
        tracing=endpoint is not None and not disabled,
        traces_endpoint=endpoint,
        headers=tuple(headers),
        resource=tuple(resource.items()),
        tiktoken_cache=cache,
        capture_content=capture.strip().lower() == "true",
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _env_number(environ: Mapping[str, str], name: str, default: float) -> float:
    value = environ.get(name)
    if value is None or not value.strip():
        return default
    if not _is_number(value) or float(value) <= 0:
        raise ConfigError(f"{name} must be a positive number, not {value!r}.")
    return float(value)


def _pairs(text: str, *, lower: bool) -> list[tuple[str, str]]:
    """`k=v,k2=v2` with URL-encoded values, as the OTEL_* variables write them."""
    pairs = []
    for pair in text.split(","):
        name, sep, value = pair.partition("=")
        if sep and name.strip():
            key = unquote(name.strip())
            pairs.append((key.lower() if lower else key, unquote(value.strip())))
    return pairs


def _prices(value: object, where: str) -> PriceTable:
    """The price table: the file prices_file names (it must load), else the packaged one."""
    if value is None:
        value = str(DEFAULT_PRICES)
    path = Path(_string(value, "prices_file", where))
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: prices_file {path} cannot be read: {exc.strerror}.") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: prices_file {path}: invalid YAML{yaml_problem(exc)}.") from exc
    models = _mapping(
        (doc or {}).get("models", {}) if isinstance(doc, dict) else None, f"{path}: models", where
    )
    table = {}
    for model, entry in models.items():
        key = f"{path}: models.{model}"
        entry = _mapping(entry, key, where)
        _no_unknown(entry, {"input", "output", "cached_input"}, key + ".", where)
        table[str(model)] = Price(
            input=_number(entry.get("input"), key + ".input", where, low=0, high=1e6),
            output=_number(entry.get("output", 0), key + ".output", where, low=0, high=1e6),
            cached_input=None
            if entry.get("cached_input") is None
            else _number(entry["cached_input"], key + ".cached_input", where, low=0, high=1e6),
        )
    return PriceTable(table)


def _provider_url(url: str, key: str, where: str) -> None:
    if url == MOCK:
        return
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: {key} must be an http(s):// URL or 'mock', not {url!r}.")
    parts = urlsplit(url)
    # Request paths are appended to the base URL, so it may carry nothing after its path.
    if not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(
            f"{where}: {key} must be scheme://host[:port][/path] with no credentials, query or "
            "fragment; put a key in api_key."
        )


def _process_overrides(value: str | None) -> dict[str, str]:
    if not value:
        return {}
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"PROMPT_OVERRIDES is not valid JSON: {exc}.") from exc
    return _overrides(doc, "PROMPT_OVERRIDES", "environment")


def _overrides(value: object, key: str, where: str) -> dict[str, str]:
    mapping = _mapping(value if value is not None else {}, key, where)
    result: dict[str, str] = {}
    for name, version in mapping.items():
        if not isinstance(version, str):
            raise ConfigError(
                f"{where}: {key}.{name} must be a version string like '1.2.0', not {version!r}."
            )
        result[str(name)] = version
    return result


def _no_unknown(raw: Mapping[str, Any], allowed: set[str], prefix: str, where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {prefix}{unknown[0]}; known keys here: "
            f"{', '.join(prefix + k for k in sorted(allowed))}."
        )


def _mapping(value: object, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping, not {type(value).__name__}.")
    return value


def _list(value: object, key: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key} must be a list, not {type(value).__name__}.")
    return value


def _pick(
    environ: Mapping[str, str],
    env: str | None,
    section: Mapping[str, Any],
    key: str,
    default: object,
    where: str,
    *,
    prefix: str = "",
    allowed: tuple[str, ...] | None = None,
) -> Any:
    """A key's value and what an error about it names: the environment variable when it is
    set (it wins), else the file's key. Returns (value, [allowed,] label, where)."""
    if env is not None and env in environ:
        found: tuple[Any, ...] = (environ[env], env, "environment")
    else:
        found = (section.get(key, default), prefix + key, where)
    return found if allowed is None else (found[0], allowed, *found[1:])


def _store_url(value: object, key: str, where: str) -> str:
    url = _string(value, key, where)
    if url.startswith("sqlite://") and not url.startswith("sqlite:///"):
        raise ConfigError(
            f"{where}: {key} {url!r} has two slashes; a SQLite URL has three before its path: "
            f"sqlite:///{url.removeprefix('sqlite://')} (or sqlite:////absolute/path.db)."
        )
    if not url.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{where}: {key} must be sqlite:///path/to/gateway.db or redis://host:port/db, "
            f"not {url.split('://')[0]!r}://..."
        )
    return url


def _string(value: object, key: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string, not {value!r}.")
    return value


def _integer(value: object, key: str, where: str, *, low: int, high: int) -> int:
    """A whole number (an integral float such as 1e6 too), or `auto` named in the message."""
    number = _number(value, key, where, low=low, high=high)
    if number != int(number):
        raise ConfigError(f"{where}: {key} must be a whole number, not {number:g}.")
    return int(number)


def _connections(value: object, key: str, where: str) -> int | None:
    """`auto` (None: sized from the file-descriptor limit when serving) or a count."""
    if value == "auto":
        return None
    if isinstance(value, str) and not _is_number(value):
        raise ConfigError(f"{where}: {key} must be auto or a whole number, not {value!r}.")
    return _integer(value, key, where, low=1, high=10_000_000)


def _choice(value: object, allowed: tuple[str, ...], key: str, where: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(allowed)}, not {value!r}.")
    return str(value)


def _number(value: object, key: str, where: str, *, low: float, high: float) -> float:
    try:
        number = float(cast(Any, value))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be a number, not {value!r}.") from None
    if not low <= number <= high:
        raise ConfigError(f"{where}: {key} must be between {low:g} and {high:g}, not {number:g}.")
    return number
