"""The admin API's request and response models (msgspec Structs), so /schema is exact.

Responses are built from the same dicts the command line prints with `--json` (`stores.codec`,
`ExperimentResults.to_json`), converted to these Structs: the CLI and the API answer one shape,
and a test checks each Struct has exactly the codec's keys. Times stay the codec's ISO 8601 text
(`+00:00`, as the CLI prints them), documented as `date-time`.

The prompt file models (`PromptFile` and its parts) only document the body of
`POST /admin/prompts`: the body itself is parsed by `core.promptfile`, the parser `gateway
prompts push` uses, so both refuse the same files with the same messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct, field

from gateway.core.model import Resolution, Variant
from gateway.core.outcomes import Direction
from gateway.core.registry import NAME
from gateway.core.stats import Recommendation, TestName

Timestamp = Annotated[
    str, Meta(extra_json_schema={"description": "ISO 8601", "extra": {"format": "date-time"}})
]

S = TypeVar("S", bound=Struct)


def shaped(doc: Any, model: type[S]) -> S:
    """`doc` (a codec dict) as `model`; a key the model lacks or misses is a bug, so it raises."""
    return msgspec.convert(doc, model)


# ---- errors ----------------------------------------------------------------------------------


class ErrorDetail(Struct):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(Struct):
    """Every 4xx and 5xx: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


# ---- prompts ---------------------------------------------------------------------------------


class MessageOut(Struct):
    """One message of a template or of a rendering."""

    role: str
    content: str


class TestFailureOut(Struct):
    """One failed expectation of one test, with the output that failed it."""

    test_id: str
    expectation: str
    detail: str
    output: str


class TestResultsOut(Struct):
    """A version's last test run (PRODUCT §3 `test_results`)."""

    total: int
    passed: int
    failed: int
    pass_rate: float
    failures: list[TestFailureOut]
    ran_at: Timestamp | None


class PromptVersionOut(Struct):
    """One prompt version with every field of PRODUCT §3."""

    id: str
    name: str
    version: str
    number: int
    messages: list[MessageOut]
    variables: list[str]
    model: str | None
    max_tokens: int | None
    temperature: float | None
    tags: list[str]
    client_system: Literal["replace", "keep"]
    created_at: Timestamp
    created_by: str
    is_active: bool
    is_tested: bool
    test_results: TestResultsOut | None


class PromptSummary(Struct):
    """A row of `GET /admin/prompts` (and `gateway prompts list --json`)."""

    name: str
    versions: int
    newest: str | None
    newest_tested: str | None
    active: str | None
    experiment: str | None
    """The id of the experiment running on the prompt, if any."""


class PromptDetail(Struct):
    """`GET /admin/prompts/{name}`: the prompt's versions in creation order."""

    name: str
    active: str | None
    versions: list[PromptVersionOut]


class PushOut(Struct):
    """What pushing one version of a prompt file did."""

    name: str
    version: str
    status: Literal["created", "unchanged"]
    file: str
    """The `source` the request named (default `request body`)."""


class RenderIn(Struct, forbid_unknown_fields=True):
    """Variables to render a version with; values are strings (numbers and booleans are turned
    into text)."""

    variables: dict[str, Any] = field(default_factory=dict)


class RenderOut(Struct):
    """A version rendered with the given variables."""

    name: str
    version: str
    messages: list[MessageOut]


class TestRunOut(Struct):
    """A test run just made: stored on the version, `is_tested` when it reached the threshold."""

    name: str
    version: str
    threshold: float
    is_tested: bool
    total: int
    passed: int
    failed: int
    pass_rate: float
    failures: list[TestFailureOut]
    ran_at: Timestamp | None


class ResolveOut(Struct):
    """Which version and variant would serve this user in this environment (PRODUCT §4)."""

    name: str
    version: str
    number: int
    variant: Variant
    resolution: Resolution
    experiment: str | None


class DiffOut(Struct):
    """A unified diff of two versions' parameters and messages; empty when they are the same."""

    name: str
    from_: str = field(name="from")
    to: str
    changed: bool
    diff: str


class PromoteIn(Struct, forbid_unknown_fields=True):
    """The version to make active; `force` skips the pass-rate gate and needs the admin role."""

    version: str
    force: bool = False


class AuditOut(Struct):
    """Who did what, when, with the state before and after."""

    at: Timestamp
    actor: str
    """The admin token's name (or the CLI user)."""
    action: str
    prompt_name: str
    version: str | None
    experiment_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    forced: bool
    detail: str


class ActivationOut(Struct):
    """What a promotion or a rollback did: the active version before and after, and its audit
    entry (`gateway prompts promote/rollback --json` print the same)."""

    name: str
    active: str | None
    previous: str | None
    changed: bool
    """False when the version was already active (nothing written, nothing audited)."""
    forced: bool
    audit: AuditOut | None


# ---- experiments -----------------------------------------------------------------------------


class ExperimentIn(Struct, forbid_unknown_fields=True):
    """An experiment to create (PRODUCT §11). Times need a timezone; `start` defaults to now."""

    id: str
    prompt_name: str
    control_version: str
    treatment_version: str
    traffic_split: Annotated[float, Meta(description="Share of units sent to the treatment, 0..1")]
    metric: Annotated[
        str,
        Meta(description="user_satisfaction, task_completion, cost_per_task or latency"),
    ]
    start: datetime | None = None
    end: datetime | None = None


class ExperimentOut(Struct):
    """An experiment as stored."""

    id: str
    prompt_name: str
    control_version: str
    treatment_version: str
    traffic_split: float
    start: Timestamp
    end: Timestamp | None
    metric: str
    status: Literal["running", "stopped"]
    created_at: Timestamp
    created_by: str
    stopped_at: Timestamp | None


class ExperimentListed(ExperimentOut):
    """An experiment, and whether it runs now (started, not ended, not stopped)."""

    running_now: bool


class ExperimentCreated(ExperimentOut):
    """The experiment, and whether this request created it (`unchanged`: it existed as asked)."""

    result: Literal["created", "unchanged"]


class ArmOut(Struct):
    """One arm of an experiment: its units, requests, mean and 95% interval."""

    version: str
    users: int
    requests: int
    with_value: int
    mean: float | None
    ci95: tuple[float, float] | None


class DifferenceOut(Struct):
    """Treatment minus control."""

    absolute: float | None
    ci95: tuple[float, float] | None
    relative: float | None


class ObservedOut(Struct):
    """Units seen per arm."""

    control: int
    treatment: int


class SampleRatioOut(Struct):
    """The sample-ratio check: chi-square of the unit counts against the configured split."""

    expected_treatment_share: float
    observed: ObservedOut
    p_value: float | None
    mismatch: bool


class ResultsOut(Struct):
    """An experiment's results (PRODUCT §11)."""

    experiment: str
    prompt_name: str
    metric: str
    status: str
    direction: Direction
    alpha: float
    control: ArmOut
    treatment: ArmOut
    difference: DifferenceOut
    test: TestName
    statistic: float | None
    df: float | None
    p_value: float | None
    srm: SampleRatioOut
    recommendation: Recommendation
    reason: str


class ConcludeIn(Struct, forbid_unknown_fields=True):
    """`force` promotes the treatment even under the pass-rate gate."""

    force: bool = False


class ConclusionOut(Struct):
    """What concluding did: the stopped experiment, whether the treatment became active, and the
    results it acted on."""

    experiment: ExperimentOut
    promoted: bool
    results: ResultsOut


# ---- the prompt file (documentation of the POST /admin/prompts body) --------------------------


class PromptMessage(Struct):
    """A template message; `{{name}}` marks a variable."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class PromptVersionDoc(Struct):
    """One version: either `messages` or `content` (shorthand for one system message)."""

    version: Annotated[str, Meta(description="Semantic version, e.g. 1.2.0")]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tags: list[str] = []
    messages: list[PromptMessage] | None = None
    content: str | None = None
    variables: list[str] | None = None
    client_system: Literal["replace", "keep"] = "replace"


class Expectation(Struct):
    """What a test's output must satisfy; every given check must hold."""

    contains: list[str] = []
    not_contains: list[str] = []
    regex: list[str] = []
    json_schema: dict[str, Any] | None = None
    judge: str | None = None


class PromptTestDoc(Struct):
    """One test case: variables, the user's messages, and what to expect."""

    id: str
    variables: dict[str, Any] = {}
    messages: list[PromptMessage] = []
    expect: Expectation | None = None
    tags: list[str] = []


class PromptFile(Struct):
    """One prompt file as JSON (PRODUCT §10): one version at the top level, or several under
    `versions`; `tests` apply to every version."""

    name: Annotated[str, Meta(pattern=f"^{NAME.pattern}$")]
    version: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tags: list[str] = []
    messages: list[PromptMessage] | None = None
    content: str | None = None
    variables: list[str] | None = None
    client_system: Literal["replace", "keep"] = "replace"
    versions: list[PromptVersionDoc] | None = None
    tests: list[PromptTestDoc] = []


# ---- adoption --------------------------------------------------------------------------------


class CandidateOut(Struct):
    """An adoption candidate (`GET /admin/adoption/candidates`, `gateway adoption candidates`)."""

    id: str
    role: str
    template: str
    """The captured text with `{{var1}}`, `{{var2}}`... where the grouped texts differ."""
    variables: list[str]
    count: int
    """Calls whose system message was one of its texts."""
    texts: int
    """Distinct texts grouped into it."""
    first_seen: Timestamp
    last_seen: Timestamp
    models: dict[str, int]
    """Calls per model."""
    model: str | None
    """The most common call's model, temperature and max_tokens (what 1.0.0 gets)."""
    temperature: float | None
    max_tokens: int | None
    examples: list[dict[str, str]]
    """Captured values of a few of its texts."""
    adoptable: bool
    problem: str | None
    adopted_as: str | None = None
    """Why it cannot be adopted (an ambiguous template), or null."""


class AdoptIn(Struct, forbid_unknown_fields=True):
    """`POST /admin/adoption/adopt`."""

    candidate: str
    name: Annotated[str, Meta(pattern=f"^{NAME.pattern}$")]
    variables: dict[str, str] = field(default_factory=dict)
    """Renames, e.g. `{"var1": "customer_name"}`; unnamed variables keep their names."""


class AdoptOut(Struct):
    """What adopting created: version 1.0.0 of the new prompt, active."""

    name: str
    candidate: str
    version: PromptVersionOut
