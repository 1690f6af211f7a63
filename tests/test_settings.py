"""Settings: the file, environment overrides, ${VAR} expansion, and errors that name the key."""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load
from tests.conftest import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_shipped_config_loads_with_defaults() -> None:
    """config/gateway.yaml is valid and matches the documented defaults."""
    settings = load(ROOT / "config/gateway.yaml", {})
    assert (settings.env, settings.store_url, settings.admin_tokens) == (
        "production",
        "sqlite:///gateway.db",
        (),
    )
    assert settings.promotion.threshold == 0.9


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a config file every key takes its default."""
    monkeypatch.chdir(tmp_path)
    settings = load(None, {})
    assert (settings.env, settings.source) == ("production", None)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """GATEWAY_* variables and PROMPT_OVERRIDES win over the file."""
    path = write(tmp_path, "env: staging\nstore_url: sqlite:///a.db\npromotion: {threshold: 0.5}\n")
    settings = load(
        path,
        {
            "GATEWAY_ENV": "development",
            "GATEWAY_STORE_URL": "redis://127.0.0.1:6379/0",
            "GATEWAY_ADMIN_TOKENS": (
                "ci:editor:tok-ci-0123456789abcdef, ops:admin:tok-ops-0123456789abcd"
            ),
            "GATEWAY_PROMOTION_THRESHOLD": "0.75",
            "PROMPT_OVERRIDES": '{"support-agent": "1.0.0"}',
        },
    )
    assert settings.env == "development"
    assert settings.store_url == "redis://127.0.0.1:6379/0"
    assert [(t.name, t.role) for t in settings.admin_tokens] == [("ci", "editor"), ("ops", "admin")]
    assert settings.admin_tokens[0].token_sha256 == sha256(b"tok-ci-0123456789abcdef").digest()
    assert settings.promotion.threshold == 0.75
    assert settings.overrides.lookup("support-agent", "staging") == ("1.0.0", "PROMPT_OVERRIDES")


def test_gateway_config_variable_names_the_file(tmp_path: Path) -> None:
    """GATEWAY_CONFIG is used when no path is given."""
    path = write(tmp_path, "env: staging\n")
    assert load(None, {"GATEWAY_CONFIG": str(path)}).env == "staging"


def test_variables_expand_in_values_only(tmp_path: Path) -> None:
    """${VAR} in a value expands from the environment; in a comment it is left alone."""
    path = write(
        tmp_path,
        "# ${NOT_SET_ANYWHERE}\nadmin_tokens: [{name: ci, role: viewer, token: '${TOKEN}'}]\n",
    )
    token = "s3cret-s3cret-s3cret"
    loaded = load(path, {"TOKEN": token}).admin_tokens
    assert loaded[0].token_sha256 == sha256(token.encode()).digest()


def test_config_overrides_per_environment(tmp_path: Path) -> None:
    """environments.<env>.overrides apply to that environment only."""
    path = write(tmp_path, "environments:\n  staging:\n    overrides: {p: 2.0.0}\n")
    overrides = load(path, {}).overrides
    assert overrides.lookup("p", "staging") == ("2.0.0", "environments.staging.overrides")
    assert overrides.lookup("p", "production") is None


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("env: prod\n", {}, "env must be one of development, staging, production, not 'prod'"),
        ("colour: red\n", {}, "unknown key colour"),
        ("promotion: {threshold: 2}\n", {}, "promotion.threshold must be between 0 and 1"),
        ("promotion: {minimum: 2}\n", {}, "unknown key promotion.minimum"),
        ("environments: {qa: {}}\n", {}, "environments.qa must be one of"),
        ("environments: {staging: {overrides: {p: 1}}}\n", {}, "environments.staging.overrides.p"),
        (
            "admin_tokens: [{name: a, role: admin, token: '${MISSING}'}]\n",
            {},
            "${MISSING} is used but that variable is unset",
        ),
        ("env: [\n", {}, "invalid YAML at line 2, column 1"),
        ("- a\n", {}, "the top level must be a mapping"),
        ("", {"PROMPT_OVERRIDES": "{nope"}, "PROMPT_OVERRIDES is not valid JSON"),
        ("", {"GATEWAY_ENV": "qa"}, "environment: GATEWAY_ENV must be one of"),
        ("", {"GATEWAY_PORT": "x"}, "environment: GATEWAY_PORT must be a number"),
        ("", {"GATEWAY_STORE_URL": "sqlite://g.db"}, "three before its path: sqlite:///g.db"),
        ("store_url: sqlite://g.db\n", {}, "store_url 'sqlite://g.db' has two slashes"),
        ("", {"GATEWAY_STORE_URL": "postgres://x"}, "GATEWAY_STORE_URL must be sqlite:///"),
        ("ui: {theme: dark}\n", {}, "unknown key ui.theme; known keys here: ui.session_max_age"),
        ("ui: {session_secret: short}\n", {}, "ui.session_secret must be at least 16"),
        ("", {"GATEWAY_UI_SESSION_SECRET": "x"}, "GATEWAY_UI_SESSION_SECRET must be at least 16"),
        ("ui: {session_max_age: 5}\n", {}, "ui.session_max_age must be between 60"),
        ("ui: {trace_url: 'http://j/t'}\n", {}, "ui.trace_url must hold {trace_id}"),
        ("", {"GATEWAY_UI_TRACE_URL": "ftp://j/{trace_id}"}, "must be an http:// or https://"),
    ],
)
def test_invalid_config_names_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    """Every invalid value stops loading with a message naming the key."""
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), environ)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("env: [\n", "line 2, column 1: expected the node content, but found '<stream end>'"),
        ("server:\n  port: 1\n port: 2\n", "line 3, column 2: expected <block end>, but found"),
        ("a: b: c\n", "line 1, column 5: mapping values are not allowed here"),
        ("\tenv: staging\n", "line 1, column 1: found character '\\t' that cannot start any"),
    ],
)
def test_invalid_yaml_is_one_line_naming_the_file_line_and_column(
    tmp_path: Path, text: str, where: str
) -> None:
    """A config file that is not YAML stops loading in one line: the file, the line and column,
    and PyYAML's problem, without its excerpt of the text."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path, {})
    message = caught.value.message
    assert message.startswith(f"{path}: invalid YAML at {where}") and "\n" not in message


def test_invalid_yaml_in_the_prices_file_is_one_line(tmp_path: Path) -> None:
    """The prices file named by the config is reported the same way, under its key."""
    (tmp_path / "prices.yaml").write_text("models:\n  gpt: {input: 1\n")
    path = write(tmp_path, f"prices_file: {tmp_path / 'prices.yaml'}\n")
    with pytest.raises(ConfigError) as caught:
        load(path, {})
    message = caught.value.message
    assert message.startswith(f"{path}: prices_file {tmp_path / 'prices.yaml'}: invalid YAML at ")
    assert "\n" not in message


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    """A named config file that does not exist is reported, not silently skipped."""
    with pytest.raises(ConfigError, match="cannot be read"):
        load(tmp_path / "nope.yaml", {})


@pytest.mark.parametrize(
    "url",
    [
        "http://user:sk-secret@provider.example/v1",
        "https://provider.example/v1?x=1",
        "https://provider.example/v1#frag",
        "http:///v1",
    ],
)
def test_a_provider_url_holds_only_scheme_host_port_and_path(url: str) -> None:
    """Credentials, queries and fragments in a base URL are refused, and never echoed."""
    with pytest.raises(ConfigError) as caught:
        load(None, {"GATEWAY_UPSTREAM_URL": url})
    assert "GATEWAY_UPSTREAM_URL" in str(caught.value)
    assert "sk-secret" not in str(caught.value)


def test_provider_options_stream_usage_and_model_quirks(tmp_path: Path) -> None:
    """stream_usage and model_quirks are read per provider; top-level quirks apply to all."""
    path = write(
        tmp_path,
        "model_quirks: {reasoning: ['o5*']}\n"
        "providers:\n"
        "  local:\n"
        "    base_url: http://127.0.0.1:8000/v1\n"
        "    stream_usage: false\n"
        "    model_quirks: {reasoning: ['deepseek-r1*']}\n"
        "  openai: {base_url: 'https://api.openai.com/v1'}\n"
        "server: {max_upload_bytes: 1048576}\n",
    )
    settings = load(path, {})
    providers = {r.provider.name: r.provider for r in settings.routes}
    assert providers["local"].stream_usage is False
    assert providers["local"].reasoning_models == ("o5*", "deepseek-r1*")
    assert settings.server.max_upload_bytes == 1048576


def test_stream_usage_must_be_a_boolean(tmp_path: Path) -> None:
    """A mistyped stream_usage names its key."""
    path = write(tmp_path, "providers:\n  local: {base_url: 'http://x/v1', stream_usage: 'no'}\n")
    with pytest.raises(ConfigError, match=r"providers\.local\.stream_usage"):
        load(path, {})


SECRET = "a-secret-token-that-is-long"


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("admin_tokens: [{name: ci, role: root, token: " + SECRET + "}]\n", {}, "role must be one"),
        ("admin_tokens: [{name: ci, role: admin, token: short}]\n", {}, "shorter than 16"),
        ("admin_tokens: [{name: ci, role: admin}]\n", {}, "exactly one of token"),
        ("admin_tokens: [{name: ci, role: admin, token_sha256: abc}]\n", {}, "64 hex digits"),
        (
            "admin_tokens: [{name: ci, role: admin, token: " + SECRET + "},"
            " {name: ci, role: viewer, token: " + SECRET + "x}]\n",
            {},
            "used twice",
        ),
        ("", {"GATEWAY_ADMIN_TOKENS": "ci:admin"}, "name:role:token"),
        ("", {"GATEWAY_ADMIN_TOKENS": "ci:boss:" + SECRET}, "role must be one"),
        ("", {"GATEWAY_ADMIN_TOKENS": "ci:admin:tiny"}, "shorter than 16"),
    ],
)
def test_bad_admin_tokens_stop_start_up_naming_the_entry(
    tmp_path: Path, text: str, environ: dict[str, str], expected: str
) -> None:
    """An unknown role, a short token or a malformed entry is refused, and no token is shown."""
    with pytest.raises(ConfigError, match=expected) as caught:
        load(write(tmp_path, text), environ)
    assert SECRET not in str(caught.value) and "tiny" not in str(caught.value)


def test_token_sha256_is_accepted(tmp_path: Path) -> None:
    """A token may be configured by its SHA-256 only, so the file never holds the secret."""
    digest = sha256(SECRET.encode()).hexdigest()
    path = write(tmp_path, f"admin_tokens: [{{name: ops, role: admin, token_sha256: {digest}}}]\n")
    assert load(path, {}).admin_tokens[0].token_sha256 == bytes.fromhex(digest)


def test_experiment_settings_and_their_environment_overrides(tmp_path: Path) -> None:
    """experiments.alpha and min_users_per_variant have defaults, file values and env overrides."""
    assert (load(None, {}).experiments.alpha, load(None, {}).experiments.min_users_per_variant) == (
        0.05,
        100,
    )
    path = write(tmp_path, "experiments: {alpha: 0.01, min_users_per_variant: 500}\n")
    assert load(path, {}).experiments.alpha == 0.01
    chosen = load(path, {"GATEWAY_EXPERIMENTS_ALPHA": "0.1", "GATEWAY_EXPERIMENTS_MIN_USERS": "50"})
    assert (chosen.experiments.alpha, chosen.experiments.min_users_per_variant) == (0.1, 50)
    with pytest.raises(ConfigError, match=r"experiments\.alpha"):
        load(write(tmp_path, "experiments: {alpha: 2}\n"), {})


def test_a_leftover_upstream_url_does_not_silently_replace_the_files_providers(
    tmp_path: Path,
) -> None:
    """GATEWAY_UPSTREAM_URL together with providers: stops start-up, naming both."""
    path = write(tmp_path, "providers:\n  local: {base_url: 'http://127.0.0.1:8000/v1'}\n")
    with pytest.raises(ConfigError, match="Unset GATEWAY_UPSTREAM_URL"):
        load(path, {"GATEWAY_UPSTREAM_URL": "mock"})
    assert load(path, {"GATEWAY_UPSTREAM_URL": ""}).routes[0].provider.name == "local"


def test_a_leftover_upstream_key_is_not_silently_ignored_beside_providers(
    tmp_path: Path,
) -> None:
    """GATEWAY_UPSTREAM_API_KEY with providers: stops start-up, naming both and the way out,
    unless a provider takes it as its api_key; set but empty counts as unset."""
    path = write(tmp_path, "providers:\n  local: {base_url: 'http://127.0.0.1:8000/v1'}\n")
    with pytest.raises(ConfigError) as caught:
        load(path, {"GATEWAY_UPSTREAM_API_KEY": "sk-left-over"})
    message = str(caught.value)
    assert message.startswith(f"{path}: providers: is set, and so is GATEWAY_UPSTREAM_API_KEY")
    assert "Unset GATEWAY_UPSTREAM_API_KEY" in message and "sk-left-over" not in message
    assert "\n" not in message
    assert load(path, {"GATEWAY_UPSTREAM_API_KEY": ""}).routes[0].provider.api_key is None
    used = write(
        tmp_path,
        "providers:\n  local: {base_url: 'http://127.0.0.1:8000/v1'}\n"
        "  openai: {base_url: 'https://api.openai.com/v1',\n"
        "           api_key: '${GATEWAY_UPSTREAM_API_KEY}'}\n"
        "routes: [{model: 'gpt-*', provider: openai}, {model: '*', provider: local}]\n",
    )
    routed = load(used, {"GATEWAY_UPSTREAM_API_KEY": "sk-used"}).routes
    assert [(r.provider.name, r.provider.api_key) for r in routed] == [
        ("openai", "sk-used"),
        ("local", None),
    ]


def test_one_token_under_two_names_is_refused(tmp_path: Path) -> None:
    """The same token for a viewer and an admin would make the viewer an admin: refused."""
    with pytest.raises(ConfigError, match="already given to 'low'") as caught:
        load(None, {"GATEWAY_ADMIN_TOKENS": f"low:viewer:{SECRET},high:admin:{SECRET}"})
    assert SECRET not in str(caught.value)


def test_a_token_of_digits_must_be_quoted(tmp_path: Path) -> None:
    """YAML reads an unquoted 20-digit token as a number: the message says to quote it."""
    path = write(
        tmp_path, "admin_tokens: [{name: ci, role: editor, token: 12345678901234567890}]\n"
    )
    with pytest.raises(ConfigError, match="quote it in YAML"):
        load(path, {})


def test_snapshot_path_from_file_and_environment(tmp_path: Path) -> None:
    """snapshot_path comes from the file, GATEWAY_SNAPSHOT_PATH wins, and unset it is None
    (the default beside the SQLite file, or in the working directory for Redis)."""
    from gateway.settings import snapshot_file_for

    path = write(tmp_path, "snapshot_path: /var/lib/gateway/snap.json\n")
    assert load(path, {}).snapshot_path == "/var/lib/gateway/snap.json"
    assert load(path, {"GATEWAY_SNAPSHOT_PATH": "/tmp/s.json"}).snapshot_path == "/tmp/s.json"
    assert load(write(tmp_path, "env: staging\n"), {}).snapshot_path is None
    assert snapshot_file_for("sqlite:////data/gateway.db") == "/data/gateway.db.snapshot.json"
    assert snapshot_file_for("redis://127.0.0.1:6379/0") == "gateway.snapshot.json"
    with pytest.raises(ConfigError, match="snapshot_path must be a non-empty string"):
        load(write(tmp_path, "snapshot_path: ''\n"), {})


def test_server_limits_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """The head deadline and limits default to 10 s, 32 KiB, 100 fields and auto connections;
    the file sets them and GATEWAY_* variables win."""
    defaults = load(None, {}).server
    assert (
        defaults.header_timeout,
        defaults.max_header_bytes,
        defaults.max_headers,
        defaults.max_connections,
    ) == (10.0, 32768, 100, None)
    path = write(
        tmp_path,
        "server: {header_timeout: 2.5, max_header_bytes: 8192, max_headers: 50, "
        "max_connections: 300}\n",
    )
    server = load(path, {}).server
    assert (server.header_timeout, server.max_header_bytes, server.max_headers) == (2.5, 8192, 50)
    assert server.max_connections == 300
    env = {
        "GATEWAY_HEADER_TIMEOUT": "1",
        "GATEWAY_MAX_HEADER_BYTES": "4096",
        "GATEWAY_MAX_HEADERS": "20",
        "GATEWAY_MAX_CONNECTIONS": "auto",
    }
    server = load(path, env).server
    assert (server.header_timeout, server.max_header_bytes, server.max_headers) == (1.0, 4096, 20)
    assert server.max_connections is None


def test_body_deadline_and_buffer_budget_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """The body deadline defaults to 30 s and the buffered-body budget to 256 MiB; the file sets
    them and GATEWAY_BODY_TIMEOUT / GATEWAY_MAX_BUFFERED_BYTES win."""
    defaults = load(None, {}).server
    assert (defaults.body_timeout, defaults.max_buffered_bytes) == (30.0, 256 << 20)
    path = write(tmp_path, "server: {body_timeout: 5, max_buffered_bytes: 33554432}\n")
    server = load(path, {}).server
    assert (server.body_timeout, server.max_buffered_bytes) == (5.0, 32 << 20)
    env = {"GATEWAY_BODY_TIMEOUT": "0.5", "GATEWAY_MAX_BUFFERED_BYTES": "20971520"}
    server = load(path, env).server
    assert (server.body_timeout, server.max_buffered_bytes) == (0.5, 20 << 20)


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("server: {body_timeout: 0}\n", {}, "server.body_timeout must be between 0.1 and"),
        ("", {"GATEWAY_BODY_TIMEOUT": "later"}, "GATEWAY_BODY_TIMEOUT must be a number"),
        (
            "server: {max_buffered_bytes: 2097152}\n",
            {},
            "server.max_buffered_bytes (2097152) is under server.max_body_bytes",
        ),
        ("", {"GATEWAY_MAX_BUFFERED_BYTES": "1"}, "GATEWAY_MAX_BUFFERED_BYTES must be between"),
        ("server: {header_timeout: 0}\n", {}, "server.header_timeout must be between 0.1 and"),
        ("", {"GATEWAY_HEADER_TIMEOUT": "soon"}, "GATEWAY_HEADER_TIMEOUT must be a number"),
        ("server: {max_header_bytes: 100}\n", {}, "server.max_header_bytes must be between 1024"),
        ("server: {max_headers: 2.5}\n", {}, "server.max_headers must be a whole number"),
        ("server: {max_connections: lots}\n", {}, "server.max_connections must be auto or a"),
        ("", {"GATEWAY_MAX_CONNECTIONS": "0"}, "GATEWAY_MAX_CONNECTIONS must be between 1"),
        ("server: {header_timout: 1}\n", {}, "unknown key server.header_timout"),
    ],
)
def test_invalid_server_limits_name_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    """A bad head deadline, head limit or connection limit stops loading, naming the key."""
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), environ)
    assert message in caught.value.message


def test_span_kind_from_file_and_environment(tmp_path: Path) -> None:
    """telemetry.span_kind is llm by default, proxy from the file or GATEWAY_TELEMETRY_SPAN_KIND."""
    assert load(ROOT / "config/gateway.yaml", {}).telemetry.span_kind == "llm"
    path = write(tmp_path, "telemetry:\n  span_kind: proxy\n")
    assert load(path, {}).telemetry.span_kind == "proxy"
    environ = {"GATEWAY_TELEMETRY_SPAN_KIND": "llm"}
    assert load(path, environ).telemetry.span_kind == "llm"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("telemetry:\n  span_kind: agent\n", {}, "telemetry.span_kind must be one of llm, proxy"),
        ("", {"GATEWAY_TELEMETRY_SPAN_KIND": "x"}, "GATEWAY_TELEMETRY_SPAN_KIND must be one of"),
        ("telemetry:\n  spankind: proxy\n", {}, "unknown key telemetry.spankind"),
    ],
)
def test_bad_span_kind_is_refused(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    """A span kind other than llm or proxy, or a misspelt key, stops start-up naming it."""
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text), environ)


def test_adoption_settings(tmp_path: Path) -> None:
    """Capture is off by default with 1,000 candidates kept; the file and the environment turn it
    on; a value that is not a boolean stops start-up naming the key."""
    assert load(None, {}).adoption.capture is False
    assert load(None, {}).adoption.max_candidates == 1000
    config = tmp_path / "gateway.yaml"
    config.write_text("adoption:\n  capture: true\n  max_candidates: 50\n")
    loaded = load(config, {}).adoption
    assert (loaded.capture, loaded.max_candidates) == (True, 50)
    env = {"GATEWAY_ADOPTION_CAPTURE": "false", "GATEWAY_ADOPTION_MAX_CANDIDATES": "7"}
    overridden = load(config, env).adoption
    assert (overridden.capture, overridden.max_candidates) == (False, 7)
    config.write_text("adoption:\n  capture: sometimes\n")
    with pytest.raises(ConfigError, match=r"adoption\.capture must be true or false"):
        load(config, {})
    config.write_text("adoption:\n  captures: true\n")
    with pytest.raises(ConfigError, match="captures"):
        load(config, {})


def test_ui_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """ui.* keys are read from the file; their environment variables win; no secret by default
    (each start then makes its own)."""
    assert load(write(tmp_path, ""), {}).ui.session_secret is None
    path = write(
        tmp_path,
        "ui: {session_secret: from-the-file-0123456789, trace_url: 'http://j/trace/{trace_id}'}\n",
    )
    ui = load(path, {"GATEWAY_UI_SESSION_MAX_AGE": "600"}).ui
    assert (ui.session_secret, ui.session_max_age, ui.trace_url) == (
        b"from-the-file-0123456789",
        600,
        "http://j/trace/{trace_id}",
    )
    assert "from-the-file" not in repr(ui)
    env = {"GATEWAY_UI_SESSION_SECRET": "from-the-environment-0123"}
    assert load(path, env).ui.session_secret == b"from-the-environment-0123"


def test_the_default_price_table_ships_in_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a checkout (no config/ folder) the packaged table prices the usual models."""
    from gateway.settings import DEFAULT_PRICES

    monkeypatch.chdir(tmp_path)
    settings = load(write(tmp_path, "env: production\n"), {})
    assert DEFAULT_PRICES.is_file() and DEFAULT_PRICES.parent.name == "gateway"
    assert settings.prices.costs("gpt-4o-mini-2024-07-18", 1_000_000, 0, 0) is not None
    own = tmp_path / "mine.yaml"
    own.write_text("models:\n  my-model: {input: 1, output: 2}\n")
    mine = load(write(tmp_path, f"prices_file: {own}\n"), {})
    assert mine.prices.costs("my-model", 1_000_000, 0, 0) is not None
    assert mine.prices.costs("gpt-4o-mini", 1_000_000, 0, 0) is None
