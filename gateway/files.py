"""Reading prompt and experiment YAML files from disk; the parsing rules live in the core."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from gateway.core.promptfile import PromptFile, parse_prompt_file
from gateway.errors import InvalidPrompt

SUFFIXES = (".yaml", ".yml")


def prompt_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders to the YAML files in them (recursively, sorted); files are taken as given."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            raise InvalidPrompt(f"{path}: no such file or folder.")
    return found


def read_yaml(path: Path) -> object:
    """Load one YAML document; a syntax error names the file, line and column."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidPrompt(f"{path}: cannot be read: {exc.strerror}.") from exc
    except yaml.YAMLError as exc:
        raise InvalidPrompt(f"{path}: invalid YAML{yaml_problem(exc)}.") from exc


def yaml_problem(exc: yaml.YAMLError) -> str:
    """` at line L, column C: the problem`, one line: PyYAML's own message quotes the text
    around the mark over several lines, which a one-line error must not."""
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{at}: {' '.join(str(problem).split())}"


def load_prompt_files(paths: Iterable[str | Path]) -> list[PromptFile]:
    """Parse every prompt file; the first invalid one raises, naming the file and the field."""
    files = [parse_prompt_file(read_yaml(p), str(p)) for p in prompt_paths(paths)]
    owners: dict[tuple[str, str], str] = {}
    for file in files:
        for draft in file.drafts:
            key = (draft.name, draft.version)
            if key in owners:
                raise InvalidPrompt(
                    f"{file.source}: {draft.name}@{draft.version} is also described in "
                    f"{owners[key]}; a version lives in one file."
                )
            owners[key] = file.source
    return files


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """An experiment as written in a file or on the command line, before it is created."""

    id: str
    prompt_name: str
    control_version: str
    treatment_version: str
    traffic_split: float
    start: datetime | None = None
    end: datetime | None = None
    metric: str = "user_satisfaction"


_EXPERIMENT_KEYS = {"id", "prompt", "control", "treatment", "split", "start", "end", "metric"}


def load_experiment_file(path: str | Path) -> list[ExperimentSpec]:
    """Read `experiments: [{id, prompt, control, treatment, split, start?, end?, metric?}]`."""
    source = Path(path)
    doc = read_yaml(source)
    items = doc.get("experiments") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise InvalidPrompt(f"{source}: expected a top-level 'experiments:' list.")
    return [_experiment(item, f"{source}: experiments[{i}]") for i, item in enumerate(items)]


def _experiment(item: Any, where: str) -> ExperimentSpec:
    if not isinstance(item, dict):
        raise InvalidPrompt(f"{where} must be a mapping.")
    unknown = sorted(set(item) - _EXPERIMENT_KEYS)
    if unknown:
        raise InvalidPrompt(
            f"{where}: unknown field {unknown[0]}; known: {', '.join(sorted(_EXPERIMENT_KEYS))}."
        )
    for key in ("id", "prompt", "control", "treatment"):
        if not isinstance(item.get(key), str):
            raise InvalidPrompt(f'{where}.{key} must be a string (quote versions: "1.2.0").')
    split = item.get("split")
    if isinstance(split, bool) or not isinstance(split, int | float):
        raise InvalidPrompt(f"{where}.split must be a number between 0 and 1.")
    return ExperimentSpec(
        id=item["id"],
        prompt_name=item["prompt"],
        control_version=item["control"],
        treatment_version=item["treatment"],
        traffic_split=float(split),
        start=parse_time(item.get("start"), f"{where}.start"),
        end=parse_time(item.get("end"), f"{where}.end"),
        metric=item.get("metric", "user_satisfaction"),
    )


def parse_time(value: object, where: str) -> datetime | None:
    """ISO 8601 with a timezone (YAML may already have parsed it); naive times are refused."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidPrompt(f"{where}: {value!r} is not an ISO 8601 time.") from None
    if not isinstance(value, datetime):
        raise InvalidPrompt(f"{where}: {value!r} is not an ISO 8601 time.")
    if value.tzinfo is None:
        raise InvalidPrompt(f"{where}: {value.isoformat()} has no timezone; add Z or +00:00.")
    return value
