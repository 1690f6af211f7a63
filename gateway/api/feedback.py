"""`POST /v1/feedback`: apps report an outcome of a call served in an experiment (PRODUCT §6.2).

`{"request_id": "...", "metric": "user_satisfaction" | "task_completion", "value": number}` ->
202 `{"status": "recorded"}`. The request id is the `x-request-id` the app received. It is checked
against the store, then the exposures this process has not written yet (also while the store is
down), then the store once more after a flush interval, for a call another replica served a
moment ago; the experiment must measure the metric and still run. The value is queued and
written off the request path, like exposures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from litestar import Request, Response, post

from gateway.core.jsondepth import check_depth
from gateway.core.model import RegistrySnapshot
from gateway.core.outcomes import FEEDBACK_METRICS, Exposure, Feedback, check_feedback_value
from gateway.errors import (
    ExperimentStopped,
    InvalidBody,
    InvalidFeedback,
    MetricNotMeasured,
    RecordingBacklog,
    RequestNotFound,
    StoreUnavailable,
)
from gateway.recording.outcomes import OutcomeRecorder
from gateway.service import SnapshotSource
from gateway.stores.base import OutcomeStore

log = logging.getLogger("gateway.feedback")

MAX_FEEDBACK_BYTES = 16 * 1024


def feedback_route(
    recorder: OutcomeRecorder,
    store: OutcomeStore,
    snapshots: SnapshotSource,
    *,
    flush_interval: float,
    settle: Callable[[], None],
) -> Any:
    """The route handler, bound to this app's recorder, store and snapshot; `settle` hands the
    calls this process finished a moment ago to the recorder (`GatewayService.settle`)."""

    @post(
        "/v1/feedback",
        status_code=202,
        request_max_body_size=MAX_FEEDBACK_BYTES,
        summary="Record an outcome of a call served in an experiment",
    )
    async def record_feedback(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
        feedback = _parse(await request.body())
        settle()
        try:
            exposure = await _exposure(store, recorder, feedback.request_id, flush_interval)
        except StoreUnavailable as exc:
            # The store's own message is for operators (a file's path, a host): logged; the app
            # is told what it can do.
            log.warning("feedback for %s not checked: %s", feedback.request_id, exc.message)
            raise StoreUnavailable(
                "The gateway's store is not answering, so the call could not be checked; nothing "
                "was recorded. Post the feedback again in a few seconds."
            ) from None
        if exposure is None:
            raise RequestNotFound(
                f"No call served in an experiment has request id {feedback.request_id!r}; send "
                "the x-request-id of a call that named a prompt under a running experiment.",
                param="request_id",
            )
        _check_experiment(snapshots.current, exposure, feedback)
        if not recorder.feedback(feedback):
            raise RecordingBacklog(
                "The gateway's outcome queue is full (the store is slow or down); nothing was "
                "recorded. Retry in a few seconds."
            )
        return Response({"status": "recorded"}, status_code=202)

    return record_feedback


async def _exposure(
    store: OutcomeStore, recorder: OutcomeRecorder, request_id: str, flush_interval: float
) -> Exposure | None:
    """The exposure of `request_id`: from the store, else this process's unwritten ones (also
    while the store is down), else the store after a flush interval (another replica served the
    call a moment ago: its batch may be coming). Raises StoreUnavailable when the store is
    needed and down."""
    try:
        exposure = await store.exposure(request_id) or recorder.queued(request_id)
    except StoreUnavailable:  # a call of this process, not written yet, is still known
        exposure = recorder.queued(request_id)
        if exposure is None:
            raise
    if exposure is None:
        await asyncio.sleep(flush_interval)
        exposure = await store.exposure(request_id)
    return exposure


def _parse(body: bytes) -> Feedback:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"We could not parse the JSON body of your request ({exc}).") from None
    if not isinstance(doc, dict):
        raise InvalidBody('The body must be a JSON object: {"request_id", "metric", "value"}.')
    check_depth(body, doc)
    unknown = sorted(set(doc) - {"request_id", "metric", "value"})
    if unknown:
        raise InvalidFeedback(f"Unknown field {unknown[0]!r}.", param=unknown[0])
    request_id = doc.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 128:
        raise InvalidFeedback(
            "request_id must be the x-request-id of a call (a string of 1 to 128 characters).",
            param="request_id",
        )
    metric = doc.get("metric")
    if metric not in FEEDBACK_METRICS:
        raise InvalidFeedback(
            f"metric must be one of {', '.join(FEEDBACK_METRICS)}, not {metric!r} (latency and "
            "cost_per_task are measured by the gateway itself).",
            param="metric",
        )
    value = doc.get("value")
    problem = check_feedback_value(metric, value)
    if problem is not None:
        raise InvalidFeedback(f"{problem}.", param="value")
    assert isinstance(value, int | float)
    return Feedback(request_id, metric, float(value), time.time_ns() // 1000)


def _check_experiment(snapshot: RegistrySnapshot, exposure: Exposure, feedback: Feedback) -> None:
    experiment = snapshot.experiment(exposure.experiment_id)
    if experiment is None or experiment.status != "running":
        raise ExperimentStopped(
            f"Experiment {exposure.experiment_id!r} is stopped; it takes no more feedback.",
            param="request_id",
        )
    if experiment.metric != feedback.metric:
        raise MetricNotMeasured(
            f"Experiment {experiment.id!r} measures {experiment.metric}, not {feedback.metric}.",
            param="metric",
        )
