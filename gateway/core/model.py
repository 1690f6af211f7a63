"""The registry's values: prompt versions, test results, experiments, audit entries, snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gateway.core.rendering import Message, Template, compile_template
from gateway.core.versions import SemVer, parse_version

Variant = Literal["control", "treatment", "none"]
Resolution = Literal["pinned", "override", "experiment", "environment"]
Environment = Literal["development", "staging", "production"]
ClientSystem = Literal["replace", "keep"]
"""What a version does with the request's own system/developer messages (PRODUCT §5)."""
CLIENT_SYSTEM: tuple[ClientSystem, ...] = ("replace", "keep")
ENVIRONMENTS: tuple[Environment, ...] = ("development", "staging", "production")
METRICS = ("user_satisfaction", "task_completion", "cost_per_task", "latency")
ROLES = frozenset({"system", "developer", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class TestFailure:
    """One failed expectation of one test, with the output that failed it."""

    test_id: str
    expectation: str
    detail: str
    output: str


@dataclass(frozen=True, slots=True)
class TestResults:
    """The outcome of a version's last test run."""

    total: int
    passed: int
    failed: int
    pass_rate: float
    failures: tuple[TestFailure, ...] = ()
    ran_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PromptDraft:
    """The content of a prompt version, validated, before the store gives it an id and a number."""

    name: str
    version: str
    messages: tuple[Message, ...]
    variables: tuple[str, ...]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    tags: tuple[str, ...] = ()
    client_system: ClientSystem = "replace"


@dataclass(frozen=True, slots=True)
class PromptVersion:
    """An immutable prompt version; only is_active, is_tested and test_results ever change."""

    id: str
    name: str
    version: str
    number: int
    messages: tuple[Message, ...]
    variables: tuple[str, ...]
    model: str | None
    max_tokens: int | None
    temperature: float | None
    tags: tuple[str, ...]
    created_at: datetime
    created_by: str
    is_active: bool = False
    is_tested: bool = False
    test_results: TestResults | None = None
    client_system: ClientSystem = "replace"
    """`replace`: the rendered messages replace the request's system/developer messages; `keep`:
    those are kept after the rendered ones (for client libraries that put instructions there)."""
    semver: SemVer = field(init=False, repr=False, compare=False)
    template: Template = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived once per version, so the request path never parses or compiles again.
        object.__setattr__(self, "semver", parse_version(self.version))
        object.__setattr__(self, "template", compile_template(self.messages))

    @property
    def label(self) -> str:
        """`name@version`, as messages and logs name a version."""
        return f"{self.name}@{self.version}"

    def content(self) -> PromptDraft:
        """The content that makes this version what it is; equal content means the same release."""
        return PromptDraft(
            self.name,
            self.version,
            self.messages,
            self.variables,
            self.model,
            self.max_tokens,
            self.temperature,
            self.tags,
            self.client_system,
        )


@dataclass(frozen=True, slots=True)
class Experiment:
    """An A/B test between two versions of one prompt."""

    id: str
    prompt_name: str
    control_version: str
    treatment_version: str
    traffic_split: float
    start: datetime
    end: datetime | None
    metric: str
    status: Literal["running", "stopped"]
    created_at: datetime
    created_by: str
    stopped_at: datetime | None = None

    def is_running(self, now: datetime) -> bool:
        """Running now: not stopped, started, and not yet ended."""
        return (
            self.status == "running" and self.start <= now and (self.end is None or now < self.end)
        )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what, when, to which prompt or experiment, with the state before and after."""

    at: datetime
    actor: str
    action: str
    prompt_name: str
    version: str | None = None
    experiment_id: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    forced: bool = False
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Adoption:
    """A prompt adopted from a hard-coded system prompt (PRODUCT §14): unmanaged requests whose
    system message matches its adopted version's template are served as this prompt."""

    version: str
    """The version created from the candidate (1.0.0): its first message is the template that
    requests are matched against, and while it is the version served, bodies pass unchanged."""
    candidate: str
    """The candidate id it was adopted from."""
    at: datetime
    by: str


@dataclass(frozen=True, slots=True)
class PromptState:
    """Everything stored about one prompt name; the unit that admin writes change atomically."""

    name: str
    versions: tuple[PromptVersion, ...] = ()
    active: str | None = None
    history: tuple[str, ...] = ()
    """Versions active before the current one, oldest first; rollback pops the last."""
    experiments: tuple[Experiment, ...] = ()
    adoption: Adoption | None = None
    """Set when the prompt was adopted from captured traffic (PRODUCT §14)."""
    by_version: Mapping[str, PromptVersion] = field(init=False, repr=False, compare=False)
    newest: PromptVersion | None = field(init=False, repr=False, compare=False)
    newest_tested: PromptVersion | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Indexed once per snapshot so that resolution is a few dict lookups, whatever the size.
        by_version = {v.version: v for v in self.versions}
        ordered = sorted(self.versions, key=lambda v: v.semver)
        tested = [v for v in ordered if v.is_tested]
        object.__setattr__(self, "by_version", by_version)
        object.__setattr__(self, "newest", ordered[-1] if ordered else None)
        object.__setattr__(self, "newest_tested", tested[-1] if tested else None)

    @property
    def active_version(self) -> PromptVersion | None:
        """The production version, if one was promoted."""
        return self.by_version.get(self.active) if self.active else None

    def experiment_running(self, now: datetime) -> Experiment | None:
        """The experiment on this prompt that runs now, if any (there is at most one)."""
        for experiment in self.experiments:
            if experiment.is_running(now):
                return experiment
        return None


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """The whole registry at one moment; an empty registry is a valid snapshot."""

    prompts: Mapping[str, PromptState] = field(default_factory=dict)
    revision: str = ""
    lineage: str = ""
    """Which life of the store this came from: a random id a store takes with its first write
    (and anew when it is restored), so the same store come back with older data (same lineage,
    lower revision: a Redis restarted from an older dump) is told from a store emptied and filled
    again on purpose (a new lineage). Empty when the store has none yet."""

    def experiment(self, experiment_id: str) -> Experiment | None:
        """Find an experiment by id."""
        for state in self.prompts.values():
            for experiment in state.experiments:
                if experiment.id == experiment_id:
                    return experiment
        return None
