"""One JSON form for stored values, shared by every backend so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.core.capture import CallShape, CapturedPrompt
from gateway.core.model import (
    Adoption,
    AuditEntry,
    Experiment,
    PromptState,
    PromptVersion,
    TestFailure,
    TestResults,
)
from gateway.core.outcomes import DIRECTIONS, Exposure, ExposureRow, Feedback
from gateway.core.rendering import Message


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def version_to_dict(version: PromptVersion) -> dict[str, Any]:
    """A version with every field of PRODUCT §3, as the admin API and the CLI show it."""
    results = version.test_results
    return {
        "id": version.id,
        "name": version.name,
        "version": version.version,
        "number": version.number,
        "messages": [{"role": m.role, "content": m.content} for m in version.messages],
        "variables": list(version.variables),
        "model": version.model,
        "max_tokens": version.max_tokens,
        "temperature": version.temperature,
        "tags": list(version.tags),
        "client_system": version.client_system,
        "created_at": _iso(version.created_at),
        "created_by": version.created_by,
        "is_active": version.is_active,
        "is_tested": version.is_tested,
        "test_results": None if results is None else results_to_dict(results),
    }


def dump_version(version: PromptVersion) -> bytes:
    """Stored form: everything but is_active, which the prompt's activation record owns."""
    doc = version_to_dict(version)
    del doc["is_active"]
    return orjson.dumps(doc)


def load_version(raw: bytes | str, *, active: str | None) -> PromptVersion:
    """Rebuild a version; `active` is the prompt's active version string.

    Rows written before `client_system` existed read as `replace`, which is what they did.
    """
    return version_from_dict(orjson.loads(raw), active=active)


def version_from_dict(doc: dict[str, Any], *, active: str | None) -> PromptVersion:
    """Inverse of version_to_dict; `is_active` is taken from `active`, never from `doc`."""
    results = doc.get("test_results")
    return PromptVersion(
        id=doc["id"],
        name=doc["name"],
        version=doc["version"],
        number=doc["number"],
        messages=tuple(Message(m["role"], m["content"]) for m in doc["messages"]),
        variables=tuple(doc["variables"]),
        model=doc["model"],
        max_tokens=doc["max_tokens"],
        temperature=doc["temperature"],
        tags=tuple(doc["tags"]),
        created_at=datetime.fromisoformat(doc["created_at"]),
        created_by=doc["created_by"],
        is_active=doc["version"] == active,
        is_tested=doc["is_tested"],
        test_results=None if results is None else results_from_dict(results),
        client_system="keep" if doc.get("client_system") == "keep" else "replace",
    )


def results_to_dict(results: TestResults) -> dict[str, Any]:
    """The test_results object of PRODUCT §3."""
    return {
        "total": results.total,
        "passed": results.passed,
        "failed": results.failed,
        "pass_rate": results.pass_rate,
        "failures": [
            {
                "test_id": f.test_id,
                "expectation": f.expectation,
                "detail": f.detail,
                "output": f.output,
            }
            for f in results.failures
        ],
        "ran_at": _iso(results.ran_at),
    }


def results_from_dict(doc: dict[str, Any]) -> TestResults:
    """Inverse of results_to_dict."""
    return TestResults(
        total=doc["total"],
        passed=doc["passed"],
        failed=doc["failed"],
        pass_rate=doc["pass_rate"],
        failures=tuple(TestFailure(**f) for f in doc.get("failures", ())),
        ran_at=_time(doc.get("ran_at")),
    )


def dump_activation(active: str | None, history: tuple[str, ...]) -> bytes:
    """The prompt's activation record: the active version and those active before it."""
    return orjson.dumps({"active": active, "history": list(history)})


def load_activation(raw: bytes | str | None) -> tuple[str | None, tuple[str, ...]]:
    """Inverse of dump_activation; a prompt never promoted has no record."""
    if not raw:
        return None, ()
    doc = orjson.loads(raw)
    return doc["active"], tuple(doc["history"])


def experiment_to_dict(experiment: Experiment) -> dict[str, Any]:
    """An experiment as the admin API and the CLI show it."""
    return {
        "id": experiment.id,
        "prompt_name": experiment.prompt_name,
        "control_version": experiment.control_version,
        "treatment_version": experiment.treatment_version,
        "traffic_split": experiment.traffic_split,
        "start": _iso(experiment.start),
        "end": _iso(experiment.end),
        "metric": experiment.metric,
        "status": experiment.status,
        "created_at": _iso(experiment.created_at),
        "created_by": experiment.created_by,
        "stopped_at": _iso(experiment.stopped_at),
    }


def dump_experiment(experiment: Experiment) -> bytes:
    """Stored form of an experiment."""
    return orjson.dumps(experiment_to_dict(experiment))


def load_experiment(raw: bytes | str) -> Experiment:
    """Inverse of dump_experiment."""
    return experiment_from_dict(orjson.loads(raw))


def experiment_from_dict(doc: dict[str, Any]) -> Experiment:
    """Inverse of experiment_to_dict."""
    start = datetime.fromisoformat(doc["start"])
    created = datetime.fromisoformat(doc["created_at"])
    return Experiment(
        id=doc["id"],
        prompt_name=doc["prompt_name"],
        control_version=doc["control_version"],
        treatment_version=doc["treatment_version"],
        traffic_split=doc["traffic_split"],
        start=start,
        end=_time(doc["end"]),
        metric=doc["metric"],
        status=doc["status"],
        created_at=created,
        created_by=doc["created_by"],
        stopped_at=_time(doc["stopped_at"]),
    )


def audit_to_dict(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as the admin API and the CLI show it."""
    return {
        "at": _iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "prompt_name": entry.prompt_name,
        "version": entry.version,
        "experiment_id": entry.experiment_id,
        "before": dict(entry.before) if entry.before is not None else None,
        "after": dict(entry.after) if entry.after is not None else None,
        "forced": entry.forced,
        "detail": entry.detail,
    }


def dump_audit(entry: AuditEntry) -> bytes:
    """Stored form of an audit entry."""
    return orjson.dumps(audit_to_dict(entry))


def load_audit(raw: bytes | str) -> AuditEntry:
    """Inverse of dump_audit."""
    return audit_from_dict(orjson.loads(raw))


def audit_from_dict(doc: dict[str, Any]) -> AuditEntry:
    """Inverse of audit_to_dict."""
    return AuditEntry(
        at=datetime.fromisoformat(doc["at"]),
        actor=doc["actor"],
        action=doc["action"],
        prompt_name=doc["prompt_name"],
        version=doc["version"],
        experiment_id=doc["experiment_id"],
        before=doc["before"],
        after=doc["after"],
        forced=doc["forced"],
        detail=doc["detail"],
    )


def load_state(
    name: str,
    docs: Iterable[bytes | str],
    activation: bytes | str | None,
    experiments: Iterable[Experiment],
    adoption: bytes | str | None = None,
) -> PromptState:
    """Assemble one prompt's state from its stored documents."""
    active, history = load_activation(activation)
    versions = sorted((load_version(doc, active=active) for doc in docs), key=lambda v: v.number)
    return PromptState(
        name=name,
        versions=tuple(versions),
        active=active,
        history=history,
        experiments=tuple(experiments),
        adoption=load_adoption(adoption) if adoption else None,
    )


def adoption_to_dict(adoption: Adoption) -> dict[str, Any]:
    """An adoption binding: `{version, candidate, at, by}`."""
    return {
        "version": adoption.version,
        "candidate": adoption.candidate,
        "at": _iso(adoption.at),
        "by": adoption.by,
    }


def adoption_from_dict(doc: dict[str, Any]) -> Adoption:
    """Inverse of adoption_to_dict."""
    at = _time(doc["at"])
    assert at is not None
    return Adoption(doc["version"], doc["candidate"], at, doc["by"])


def dump_adoption(adoption: Adoption) -> bytes:
    """Stored form of an adoption binding."""
    return orjson.dumps(adoption_to_dict(adoption))


def load_adoption(raw: bytes | str) -> Adoption:
    """Inverse of dump_adoption."""
    return adoption_from_dict(orjson.loads(raw))


def dump_captured(prompt: CapturedPrompt) -> bytes:
    """Stored form of a captured prompt (its fingerprint is the key it is stored under too).

    Shapes are `[model, temperature, max_tokens, count]` lists, most common first.
    """
    shapes = sorted(prompt.shapes.items(), key=lambda kv: -kv[1])
    return orjson.dumps(
        {
            "fingerprint": prompt.fingerprint,
            "role": prompt.role,
            "sample": prompt.sample,
            "count": prompt.count,
            "first_seen": utc_iso(prompt.first_seen),
            "last_seen": utc_iso(prompt.last_seen),
            "shapes": [[s.model, s.temperature, s.max_tokens, n] for s, n in shapes],
        }
    )


def load_captured(raw: bytes | str) -> CapturedPrompt:
    """Inverse of dump_captured."""
    doc = orjson.loads(raw)
    return CapturedPrompt(
        fingerprint=doc["fingerprint"],
        role=doc["role"],
        sample=doc["sample"],
        count=doc["count"],
        first_seen=datetime.fromisoformat(doc["first_seen"]),
        last_seen=datetime.fromisoformat(doc["last_seen"]),
        shapes={CallShape(m, t, x): n for m, t, x, n in doc["shapes"]},
    )


def utc_iso(at: datetime) -> str:
    """An exposure's time as stored: ISO 8601 in UTC (a naive time is taken as UTC already),
    exactly `at.astimezone(UTC).isoformat()`.

    Every exposure is formatted as its batch is written, so the text is orjson's RFC 3339 form,
    which for a time in UTC is `isoformat`'s character for character (microseconds only when
    not zero, `+00:00`): 0.73 -> 0.28 µs per time, and no cache of its own.
    """
    if at.tzinfo is not UTC and at.tzinfo is not None:
        at = at.astimezone(UTC)
    return orjson.dumps(at, option=orjson.OPT_NAIVE_UTC)[1:-1].decode()


def utc_text(at_us: int) -> str:
    """`utc_iso` of a time given as microseconds since the epoch (an `ExposureRow`'s), the same
    text character for character. Raises OverflowError past the year 9999.

    A batch's calls fall within a few seconds: each second's text is made once (a datetime per
    second, not per exposure) and kept, up to `SECOND_TEXTS` of them."""
    seconds, micro = divmod(at_us, 1_000_000)
    text = _second_texts.get(seconds)
    if text is None:
        if len(_second_texts) >= SECOND_TEXTS:
            _second_texts.clear()
        text = _second_texts[seconds] = (_NAIVE_EPOCH + timedelta(seconds=seconds)).isoformat()
    return f"{text}.{micro:06d}+00:00" if micro else f"{text}+00:00"


SECOND_TEXTS = 4096
_second_texts: dict[int, str] = {}
_NAIVE_EPOCH = datetime(1970, 1, 1)


def load_exposure(request_id: str, raw: bytes | str) -> Exposure:
    """An exposure from its stored document: a JSON array of its fields but the request id (the
    key it is stored under), in Exposure's order, `at` as `utc_iso` text.

    An array rather than an object: a store keeps one per call, a million per experiment, and
    the field names would add about as much again. A field added later goes at the end, so older
    documents keep their positions. The Redis script writes these documents, and reads items 1,
    2 and 4 (experiment id, variant, unit) to find the aggregate that a feedback value moves.
    """
    return exposure_from_fields(request_id, *orjson.loads(raw))


def exposure_from_fields(request_id: str, *fields: Any) -> Exposure:
    """An Exposure from its stored fields in Exposure's order (`at` as ISO 8601 text); a
    document written before the trace id was kept has no 11th field. Latency and cost are
    floats whatever their text (17 significant digits of 250.0 read as the integer 250)."""
    stored = fields[:10]
    experiment_id, variant, version, unit, at, latency, tokens_in, tokens_out, cost, status = stored
    trace_id = fields[10] if len(fields) > 10 else None
    return Exposure(
        request_id,
        experiment_id,
        variant,
        version,
        unit,
        datetime.fromisoformat(at),
        float(latency),
        tokens_in,
        tokens_out,
        None if cost is None else float(cost),
        status,
        trace_id,
    )


LARGEST = 1e100
"""The largest latency (ms), cost (USD) or feedback value a store takes: the sums of squares of
any number of them stay finite (a latency of 1e155 ms squared is infinite)."""


def check_outcomes(exposures: Sequence[ExposureRow], feedback: Sequence[Feedback]) -> None:
    """Raise ValueError, before anything is written, when a batch holds a number that is not
    finite or whose square is not (beyond ±`LARGEST`), or an exposure's time outside 1900-2199.

    Aggregates are sums and sums of squares: one NaN or infinity would spoil its unit's sum for
    good. JSON has no such number either (orjson writes null), and the Redis script would stop
    on it halfway through a batch, its earlier writes kept. A call's time comes from the
    gateway's clock; within these years it is exact as a double's microseconds, which the
    Redis script reads it as. (Chained comparisons, false for NaN: no call per exposure.)
    """
    for request_id, _, _, _, _, at, latency, _, _, cost, _, _ in exposures:
        if not (
            -LARGEST <= latency <= LARGEST
            and -LARGEST <= (cost or 0.0) <= LARGEST
            and FIRST_AT_US <= at < END_AT_US
        ):
            raise ValueError(
                f"Exposure {request_id!r} has latency_ms={latency!r}, cost_usd={cost!r}, "
                f"at={at!r} µs; latency and cost must be finite numbers within ±{LARGEST:g}, "
                "the time from 1900 to 2199 (UTC). Nothing was written."
            )
    for f in feedback:
        if not -LARGEST <= f.value <= LARGEST:
            raise ValueError(
                f"Feedback {f.metric} for {f.request_id!r} is {f.value!r}; it must be a finite "
                f"number within ±{LARGEST:g}. Nothing was written."
            )


FIRST_AT_US = -2_208_988_800_000_000
"""1900-01-01T00:00:00Z in microseconds since the epoch: the earliest exposure time stored."""
END_AT_US = 7_258_118_400_000_000
"""2200-01-01T00:00:00Z: exposure times stop before it (both bounds under 2^53 in magnitude)."""


def check_metric(metric: str) -> None:
    """Raise ValueError unless `metric` is one that experiments measure (PRODUCT §11)."""
    if metric not in DIRECTIONS:
        raise ValueError(f"Unknown metric {metric!r}; experiments measure {', '.join(DIRECTIONS)}.")
