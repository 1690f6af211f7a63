"""Prometheus metrics, kept in process and rendered in the text format at GET /metrics.

Label values come from bounded sets (routes, statuses, providers, prompts); model names come from
clients, so each metric keeps at most MAX_SERIES label sets and folds the rest into `other`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence

from gateway.telemetry.events import CallRecord

MAX_SERIES = 2000
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
Labels = tuple[str, ...]
_Key = tuple[str, str | None, int, str, str, str, str, str]
_Series = tuple[Labels, list[float], list[float], Labels, Labels, Labels, Labels]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    """A monotonically increasing value per label set."""

    def __init__(self, name: str, help: str, labels: Sequence[str]) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        if labels not in values and len(values) >= MAX_SERIES:
            labels = ("other",) * len(labels)
        values[labels] = values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in self.values.items():
            lines.append(f"{self.name}{_fmt(self.labels, labels)} {value:g}")
        return lines


class Histogram:
    """Observations in fixed buckets per label set."""

    def __init__(
        self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.help, self.labels = name, help, tuple(labels)
        self.buckets = tuple(buckets)
        self.series: dict[Labels, list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                labels = ("other",) * len(labels)
            series = self.series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
        series[bisect.bisect_left(self.buckets, value)] += 1
        series[-1] += value

    def series_for(self, labels: Labels) -> list[float]:
        """The bucket counts, +Inf count and sum of a label set (made empty when new), to
        update in place as `observe` does."""
        series = self.series.get(labels)
        if series is None:
            if len(self.series) >= MAX_SERIES:
                labels = ("other",) * len(labels)
            series = self.series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
        return series

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, series in self.series.items():
            running = 0.0
            for bound, count in zip((*self.buckets, "+Inf"), series[:-1], strict=True):
                running += count
                le = bound if isinstance(bound, str) else f"{bound:g}"
                lines.append(
                    f"{self.name}_bucket{_fmt((*self.labels, 'le'), (*labels, le))} {running:g}"
                )
            lines.append(f"{self.name}_count{_fmt(self.labels, labels)} {running:g}")
            lines.append(f"{self.name}_sum{_fmt(self.labels, labels)} {series[-1]:g}")
        return lines


def _fmt(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)) + "}"


_ROUTES: dict[str, str] = {}


def route_label(route: str) -> str:
    """The route as a metric label: segments that name an object (an id, a model name: they
    hold a digit, `.` or `:`) become `{id}`, so `/files/file-abc12/content` is
    `/files/{id}/content`. Label values stay few whatever paths clients send."""
    found = _ROUTES.get(route)
    if found is None:
        found = "/".join(
            "{id}" if any(c.isdigit() or c in ".:" for c in part) else part
            for part in route.split("/")
        )
        if len(_ROUTES) < 4096:
            _ROUTES[route] = found
    return found


class Metrics:
    """The gateway's metrics; an Observer of finished calls."""

    def __init__(
        self,
        dropped_spans: Callable[[], int] = lambda: 0,
        *,
        dropped_exposures: Callable[[], int] = lambda: 0,
        dropped_captures: Callable[[], int] = lambda: 0,
        registry_stale: Callable[[], bool] = lambda: False,
        refused_connections: Callable[[], Mapping[str, int]] = dict,
        buffered_bytes: Callable[[], int] = lambda: 0,
    ) -> None:
        self._dropped_spans = dropped_spans
        self._buffered_bytes = buffered_bytes
        self._refused_connections = refused_connections
        self._dropped_exposures = dropped_exposures
        self._dropped_captures = dropped_captures
        self._registry_stale = registry_stale
        self._series: dict[_Key, _Series] = {}
        self.requests = Counter(
            "gateway_requests_total",
            "Proxied calls.",
            ("route", "status", "provider", "model", "prompt_name", "prompt_version", "variant"),
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Whole call, arrival to last byte.",
            ("route", "provider"),
            LATENCY_BUCKETS,
        )
        self.first_chunk = Histogram(
            "gateway_time_to_first_chunk_seconds",
            "Arrival to the first streamed chunk.",
            ("route", "provider"),
            LATENCY_BUCKETS,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time spent in the gateway, provider wait excluded.",
            ("route",),
            OVERHEAD_BUCKETS,
        )
        self.tokens = Counter(
            "gateway_tokens_total",
            "Tokens by direction (estimated ones included).",
            ("direction", "provider", "model"),
        )
        self.cost = Counter(
            "gateway_cost_usd_total", "Cost by model, from the price table.", ("provider", "model")
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total", "Provider failures by kind.", ("kind", "provider")
        )

    def call_finished(self, record: CallRecord) -> None:
        prompt = record.prompt
        model = record.response_model or record.request_model or ""
        key = (
            record.route,
            record.error_type,
            record.status,
            record.provider,
            model,
            prompt.name if prompt else "",
            prompt.version if prompt else "",
            prompt.variant if prompt else "",
        )
        series = self._series.get(key)
        if series is None:
            series = self._series_for(key)
        requests, duration, overhead, route_provider, provider_model, inputs, outputs = series
        values = self.requests.values
        values[requests] = values.get(requests, 0.0) + 1.0
        value = record.duration_s
        duration[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        duration[-1] += value
        value = record.overhead_ms / 1000
        overhead[bisect.bisect_left(OVERHEAD_BUCKETS, value)] += 1
        overhead[-1] += value
        if record.time_to_first_chunk_s is not None:
            self.first_chunk.observe(route_provider, record.time_to_first_chunk_s)
        if record.input_tokens:
            self.tokens.inc(inputs, record.input_tokens)
        if record.output_tokens:
            self.tokens.inc(outputs, record.output_tokens)
        if record.cost_usd:
            self.cost.inc(provider_model, record.cost_usd)
        error_type = record.error_type
        if error_type is not None:
            if error_type.startswith("upstream_"):
                self.upstream_errors.inc((error_type.removeprefix("upstream_"), record.provider))
            elif record.status >= 500:
                self.upstream_errors.inc(("status_" + str(record.status), record.provider))

    def _series_for(self, key: _Key) -> _Series:
        """The label sets and histogram series of one kind of call, looked up once: calls of
        the same route, status, provider, model and prompt version update them directly."""
        raw_route, error_type, status, provider, model, name, version, variant = key
        route = "invalid" if error_type == "invalid_path" else route_label(raw_route)
        requests: Labels = (route, str(status), provider, model, name, version, variant)
        if requests not in self.requests.values and len(self.requests.values) >= MAX_SERIES:
            requests = ("other",) * len(requests)
        series = (
            requests,
            self.duration.series_for((route, provider)),
            self.overhead.series_for((route,)),
            (route, provider),
            (provider, model),
            ("input", provider, model),
            ("output", provider, model),
        )
        if len(self._series) >= MAX_SERIES:  # bounded: model names come from clients
            self._series.clear()
        self._series[key] = series
        return series

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        for metric in (
            self.requests,
            self.duration,
            self.first_chunk,
            self.overhead,
            self.tokens,
            self.cost,
            self.upstream_errors,
        ):
            lines.extend(metric.render())
        lines += [
            "# HELP gateway_spans_dropped_total Spans lost before export.",
            "# TYPE gateway_spans_dropped_total counter",
            f"gateway_spans_dropped_total {self._dropped_spans()}",
            "# HELP gateway_exposures_dropped_total Experiment exposures lost before the store.",
            "# TYPE gateway_exposures_dropped_total counter",
            f"gateway_exposures_dropped_total {self._dropped_exposures()}",
            "# HELP gateway_adoption_dropped_total System prompt sightings lost before the store "
            "(adoption capture).",
            "# TYPE gateway_adoption_dropped_total counter",
            f"gateway_adoption_dropped_total {self._dropped_captures()}",
            "# HELP gateway_registry_stale 1 while the store holds older data than is served.",
            "# TYPE gateway_registry_stale gauge",
            f"gateway_registry_stale {int(self._registry_stale())}",
            "# HELP gateway_buffered_body_bytes Bytes of JSON request bodies held now "
            "(bounded by server.max_buffered_bytes).",
            "# TYPE gateway_buffered_body_bytes gauge",
            f"gateway_buffered_body_bytes {self._buffered_bytes()}",
            "# HELP gateway_connections_refused_total Connections the server answered or closed "
            "itself (slow or oversized heads, malformed HTTP, the connection limit), by code.",
            "# TYPE gateway_connections_refused_total counter",
        ]
        lines += [
            f'gateway_connections_refused_total{{code="{_escape(code)}"}} {count}'
            for code, count in sorted(self._refused_connections().items())
        ]
        return "\n".join(lines) + "\n"
