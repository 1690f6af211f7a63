"""Every error the gateway raises on purpose, each with its HTTP status and OpenAI error shape.

The tree, with each class's HTTP status and OpenAI error code (4xx have the OpenAI type
`invalid_request_error`, 5xx `server_error`; 401 `authentication_error`, 403 `permission_error`)::

    GatewayError                      500 internal_error
    ├── InvalidRequest                400 invalid_request
    │   ├── MissingPromptVariables    400 missing_prompt_variables
    │   ├── InvalidPromptVariables    400 invalid_prompt_variables
    │   ├── InvalidPrompt             400 invalid_prompt   (a bad name, semver, template or file)
    │   ├── InvalidBody               400 invalid_json     (a body that is not a JSON object)
    │   ├── InvalidPath               400 invalid_path     (a path that could leave the base URL)
    │   ├── InvalidExperiment         400 invalid_experiment (a bad id, split, window or metric)
    │   ├── InvalidFeedback           400 invalid_feedback (a feedback metric or value out of range)
    │   ├── MalformedRequest          400 invalid_http     (not HTTP/1.1: answered by the server)
    │   └── MetricNotMeasured         400 metric_not_measured (feedback for another metric)
    ├── InvalidAdminToken             401 invalid_admin_token (type authentication_error)
    ├── InsufficientRole              403 insufficient_role  (type permission_error)
    ├── RequestTimeout                408 request_timeout  (a request head or body came too slowly)
    ├── PayloadTooLarge               413 request_too_large
    ├── HeaderFieldsTooLarge          431 request_header_fields_too_large (too many or too long)
    ├── NotFound                      404 not_found
    │   ├── PromptNotFound            404 prompt_not_found
    │   ├── NoServableVersion         404 no_servable_version
    │   ├── VersionNotFound           404 version_not_found
    │   ├── ExperimentNotFound        404 experiment_not_found
    │   ├── StoreNotFound             404 store_not_found  (the CLI read a SQLite file never made)
    │   ├── RequestNotFound           404 request_not_found (no experiment call with that id)
    │   ├── CandidateNotFound         404 candidate_not_found (no adoption candidate with that id)
    │   └── ModelNotRouted            404 model_not_found  (no route matches the model)
    ├── Conflict                      409 conflict
    │   ├── VersionConflict           409 version_conflict   (same version, other content)
    │   ├── PromotionRefused          409 promotion_refused  (pass rate under the threshold)
    │   ├── NothingToRollBack         409 nothing_to_roll_back
    │   ├── StateChanged              409 state_changed      (the state moved since it was shown)
    │   ├── ExperimentConflict        409 experiment_conflict
    │   ├── ExperimentStopped         409 experiment_stopped (feedback after the experiment)
    │   └── StoreNotEmpty             409 store_not_empty    (restore writes only an empty store)
    ├── ClientClosedRequest           499 client_closed_request (recorded, never sent: nginx's 499)
    ├── UpstreamUnreachable           502 upstream_unreachable
    ├── UpstreamReset                 502 upstream_reset     (the provider dropped the answer)
    ├── UpstreamTimeout               504 upstream_timeout
    ├── TestRunAborted                502 test_run_aborted  (tests could not reach a provider)
    ├── StoreUnavailable              503 store_unavailable
    ├── RecordingBacklog              503 recording_backlog (the outcome queue is full)
    ├── TooManyConnections            503 too_many_connections (every connection slot is busy)
    ├── ServerBusy                    503 server_busy        (body buffer budget spent; retry-after)
    └── ConfigError                   500 config_error       (stops start-up; names the key)

Messages say what happened, with the values, and what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every deliberate gateway error."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    retry_after: ClassVar[int | None] = None
    """Seconds to send as `retry-after` with the answer, when retrying soon may succeed."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_openai(self) -> dict[str, Any]:
        """The body OpenAI's API would send for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class MissingPromptVariables(InvalidRequest):
    code = "missing_prompt_variables"


class InvalidPromptVariables(InvalidRequest):
    code = "invalid_prompt_variables"


class InvalidPrompt(InvalidRequest):
    code = "invalid_prompt"


class InvalidBody(InvalidRequest):
    code = "invalid_json"


class InvalidPath(InvalidRequest):
    code = "invalid_path"


class InvalidExperiment(InvalidRequest):
    code = "invalid_experiment"


class InvalidFeedback(InvalidRequest):
    code = "invalid_feedback"


class MetricNotMeasured(InvalidRequest):
    code = "metric_not_measured"


class MalformedRequest(InvalidRequest):
    code = "invalid_http"


class InvalidAdminToken(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_admin_token"


class InsufficientRole(GatewayError):
    status = 403
    type = "permission_error"
    code = "insufficient_role"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class HeaderFieldsTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PromptNotFound(NotFound):
    code = "prompt_not_found"


class NoServableVersion(NotFound):
    code = "no_servable_version"


class VersionNotFound(NotFound):
    code = "version_not_found"


class StoreNotFound(NotFound):
    """A command that only reads found no SQLite store where the settings point (it would have
    created an empty one, hiding a wrong working directory or a missing config)."""

    code = "store_not_found"


class ExperimentNotFound(NotFound):
    code = "experiment_not_found"


class RequestNotFound(NotFound):
    code = "request_not_found"


class CandidateNotFound(NotFound):
    code = "candidate_not_found"


class ModelNotRouted(NotFound):
    code = "model_not_found"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class VersionConflict(Conflict):
    code = "version_conflict"


class PromotionRefused(Conflict):
    code = "promotion_refused"


class NothingToRollBack(Conflict):
    code = "nothing_to_roll_back"


class StateChanged(Conflict):
    """A change made for a state the caller saw, refused because the state moved since (another
    operator, a stale page): nothing was written."""

    code = "state_changed"


class ExperimentConflict(Conflict):
    code = "experiment_conflict"


class ExperimentStopped(Conflict):
    code = "experiment_stopped"


class StoreNotEmpty(Conflict):
    code = "store_not_empty"


class UpstreamUnreachable(GatewayError):
    status = 502
    code = "upstream_unreachable"


class ClientClosedRequest(GatewayError):
    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class UpstreamReset(GatewayError):
    status = 502
    code = "upstream_reset"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"


class TestRunAborted(GatewayError):
    """A prompt test could not reach its provider (unreachable, timed out, refused the key, rate
    limited or failing): the run says nothing about the prompt, so nothing is stored and the
    version's tested mark stays as it was. The CLI exits 2 on it."""

    __test__ = False  # not a pytest test class
    status = 502
    code = "test_run_aborted"


class StoreUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "store_unavailable"


class RecordingBacklog(GatewayError):
    status = 503
    code = "recording_backlog"


class TooManyConnections(GatewayError):
    status = 503
    code = "too_many_connections"


class ServerBusy(GatewayError):
    """The worker holds as many request bodies as server.max_buffered_bytes allows; this one was
    not read. Nothing is wrong with the request: retry after a moment."""

    status = 503
    code = "server_busy"
    retry_after = 1


class ConfigError(GatewayError):
    code = "config_error"
