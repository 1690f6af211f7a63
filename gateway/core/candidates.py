"""Adoption candidates: captured system prompts grouped into templates (PRODUCT §14).

Texts that differ only in a few spans (a name, a date, a plan) become one candidate whose
template has `{{var1}}`, `{{var2}}`... at the differing spans. The alignment is difflib's
`SequenceMatcher` over word, whitespace and punctuation tokens (so a name is replaced whole, not
letter by letter):

1. Captured prompts are taken by count, most called first; each joins the first group (same
   role) whose representative it aligns with closely enough, else it starts a group.
   Closely enough: at most MAX_SPANS differing spans, covering at most MAX_DIFFERING_SHARE of
   the longer text's characters. Texts that differ more stay separate candidates.
2. A group's template keeps the representative's tokens that every member has in an equal block;
   each run of the others (and each place a member inserted text) is a variable. Two variables
   separated only by spaces or punctuation are one (`{{var1}}` for "Ada Lovelace", not two).
3. Each member's values are read off its alignment. A candidate with a captured value that
   contains the literal text before or after it (so a request's text could be split two ways)
   carries a `problem` and cannot be adopted: ambiguity is decided here, once, not per request.

Bounded cost: a full alignment is quadratic in the worst case, so it runs only on pairs that
pass cheap, sound prefilters (same role; lengths within MAX_DIFFERING_SHARE; the characters of
the words one text has and the other lacks anywhere, which can only be in differing spans,
within MAX_DIFFERING_SHARE, checked with set operations first). At most MAX_ALIGNMENTS full
alignments run per grouping, and none after MAX_GROUPING_SECONDS: once either is spent, the
texts not yet placed are left ungrouped (each its own literal candidate, still adoptable).
Callers on an event loop run it in a worker thread (`gateway.adoption`).

Pure and deterministic while within MAX_ALIGNMENTS (the time limit is a safety net): the same
captured prompts give the same candidates and ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from difflib import SequenceMatcher

from gateway.core.capture import CallShape, CapturedPrompt, calls_per_model
from gateway.core.rendering import PLACEHOLDER

MAX_DIFFERING_SHARE = 0.3
"""Texts whose differing spans cover more of the longer one than this stay separate."""
MAX_SPANS = 8
"""Texts that differ in more spans than this stay separate."""
MAX_ALIGNMENTS = 2_000
"""Full alignments (SequenceMatcher) per grouping; past it, unplaced texts stay ungrouped."""
MAX_GROUPING_SECONDS = 2.0
"""Wall-clock time after which no further alignment runs (texts not yet placed stay ungrouped)."""
MAX_EXAMPLES = 3
"""Members' captured values shown per candidate."""

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
_ALNUM = re.compile(r"[^\W_]")


@dataclass(frozen=True, slots=True)
class Candidate:
    """A template for one or more captured prompts, ready to adopt unless it has a `problem`."""

    id: str
    """`c` and 10 hex digits of the template's sha256: the same template keeps its id."""
    role: str
    literals: tuple[str, ...]
    """The literal text around the variables: one more than there are variables."""
    variables: tuple[str, ...]
    """`var1`, `var2`... in order of appearance."""
    count: int
    """Calls its texts were seen in."""
    texts: int
    """Distinct texts (fingerprints) it groups."""
    first_seen: datetime
    last_seen: datetime
    shapes: Mapping[CallShape, int]
    examples: tuple[Mapping[str, str], ...]
    """The values of up to MAX_EXAMPLES members, most called first."""
    values: tuple[tuple[str, ...], ...] = field(repr=False)
    """Every member's values, in variable order (for the ambiguity check)."""
    problem: str | None = None
    """Why it cannot be adopted, or None."""

    @property
    def template(self) -> str:
        """The literals joined by `{{varN}}` placeholders."""
        return template_text(self.literals, self.variables)

    def values_as_dicts(self) -> list[dict[str, str]]:
        """Every member's values by variable name."""
        return [dict(zip(self.variables, v, strict=True)) for v in self.values]

    @property
    def models(self) -> dict[str, int]:
        """Calls per model."""
        return calls_per_model(self.shapes)


def template_text(literals: Sequence[str], variables: Sequence[str]) -> str:
    """`literals[0]{{variables[0]}}literals[1]...`."""
    out = [literals[0]]
    for name, literal in zip(variables, literals[1:], strict=True):
        out.append("{{" + name + "}}")
        out.append(literal)
    return "".join(out)


def template_pattern(literals: Sequence[str]) -> re.Pattern[str]:
    """The matcher the gateway serves with: the literals in order, each variable the shortest
    text that lets the rest match (use `fullmatch`)."""
    return re.compile("(.*?)".join(re.escape(lit) for lit in literals), re.DOTALL)


def find_candidates(
    prompts: Sequence[CapturedPrompt], *, clock: Callable[[], float] | None = None
) -> list[Candidate]:
    """Group the captured prompts into candidates, most called first. With a monotonic `clock`
    (seconds), no alignment starts MAX_GROUPING_SECONDS after the call began."""
    groups: list[_Group] = []
    holding: dict[tuple[str, str], list[int]] = {}
    """(role, token) -> the groups whose representative has the token, in creation order."""
    budget = _Budget(MAX_ALIGNMENTS, clock)
    for prompt in sorted(prompts, key=lambda p: (-p.count, p.fingerprint)):
        tokens = _TOKEN.findall(prompt.sample)
        words = frozenset(tokens)
        if budget.left():
            for index in _worth_trying(prompt, words, holding, len(groups)):
                if groups[index].join(prompt, tokens, words, budget):
                    break
            else:
                _start(groups, holding, _Group(prompt, tokens, words))
        else:
            _start(groups, holding, _Group(prompt, tokens, words))
    found = [g.candidate() for g in groups]
    found.sort(key=lambda c: (-c.count, c.id))
    return found


def _start(groups: list[_Group], holding: dict[tuple[str, str], list[int]], group: _Group) -> None:
    for word in group.words:
        holding.setdefault((group.role, word), []).append(len(groups))
    groups.append(group)


def _worth_trying(
    prompt: CapturedPrompt,
    words: frozenset[str],
    holding: dict[tuple[str, str], list[int]],
    count: int,
) -> list[int]:
    """The groups (in order) that can hold the text: a group of the same role whose
    representative has none of a set of the text's tokens weighing more than the differing
    share allows (the longer text is at most len / (1 - share)) cannot, so only the groups
    holding one of the text's rarest tokens are tried."""
    allowed = MAX_DIFFERING_SHARE * len(prompt.sample) / (1 - MAX_DIFFERING_SHARE)
    ranked = sorted(words, key=lambda w: (len(holding.get((prompt.role, w), ())), w))
    weight = 0
    found: set[int] = set()
    for word in ranked:
        found.update(holding.get((prompt.role, word), ()))
        weight += len(word)
        if weight > allowed:
            return sorted(found)
    # The text's distinct tokens weigh too little to rule any group out.
    return sorted({i for (role, _), held in holding.items() if role == prompt.role for i in held})


def ambiguity(
    literals: Sequence[str], variables: Sequence[str], values: Sequence[str]
) -> str | None:
    """Why these values make the template ambiguous, or None.

    A value that contains the literal text before or after it could be split at that literal
    instead (`Dear {{var1}} and {{var2}}` with "Tom and Jerry", "Ann"), so it is refused; so is
    any value the serving matcher would read back differently.
    """
    if not variables:
        return None
    for i, (name, value) in enumerate(zip(variables, values, strict=True)):
        for literal, where in ((literals[i], "before"), (literals[i + 1], "after")):
            if literal and literal in value:
                return (
                    f"the captured value {value!r} of {name} contains {literal!r}, the literal "
                    f"text {where} it, so a request's text could be read two ways"
                )
    text = [literals[0]]
    for value, literal in zip(values, literals[1:], strict=True):
        text += [value, literal]
    match = template_pattern(literals).fullmatch("".join(text))
    if match is None or match.groups() != tuple(values):
        return f"the captured values {list(values)!r} would be read back differently"
    return None


class _Budget:
    """What is left of a grouping's alignments and time."""

    __slots__ = ("alignments", "clock", "deadline")

    def __init__(self, alignments: int, clock: Callable[[], float] | None) -> None:
        self.alignments = alignments
        self.clock = clock
        self.deadline = clock() + MAX_GROUPING_SECONDS if clock is not None else 0.0

    def left(self) -> bool:
        if self.alignments <= 0:
            return False
        return self.clock is None or self.clock() < self.deadline

    def spend(self) -> bool:
        """Take one alignment; False (taking nothing) when the budget is spent."""
        if not self.left():
            return False
        self.alignments -= 1
        return True


class _Group:
    """A representative text and the texts aligned to it."""

    def __init__(self, prompt: CapturedPrompt, tokens: list[str], words: frozenset[str]) -> None:
        self.role = prompt.role
        self.rep = tokens
        self.words = words
        self.size = len(prompt.sample)
        self.members: list[tuple[CapturedPrompt, list[str], list[tuple[str, int, int, int, int]]]]
        self.members = [(prompt, tokens, [("equal", 0, len(tokens), 0, len(tokens))])]
        self._matcher: SequenceMatcher[str] | None = None

    def join(
        self, prompt: CapturedPrompt, tokens: list[str], words: frozenset[str], budget: _Budget
    ) -> bool:
        """Add the text when it aligns closely enough with the representative."""
        longer = max(self.size, len(prompt.sample))
        allowed = MAX_DIFFERING_SHARE * longer
        if abs(self.size - len(prompt.sample)) > allowed:
            return False
        # A token one text has and the other lacks anywhere lies in a differing span: the
        # characters of such distinct tokens are a lower bound of the differing share.
        only_here, only_there = words - self.words, self.words - words
        if len(only_here) > allowed or len(only_there) > allowed:
            return False
        if sum(map(len, only_here)) > allowed or sum(map(len, only_there)) > allowed:
            return False
        if not budget.spend():
            return False
        matcher = self._matcher
        if matcher is None:
            # It caches what it learns about its second sequence: the representative.
            matcher = self._matcher = SequenceMatcher(None, autojunk=False)
            matcher.set_seq2(self.rep)
        matcher.set_seq1(tokens)
        ops: list[tuple[str, int, int, int, int]] = list(matcher.get_opcodes())
        changed = [op for op in ops if op[0] != "equal"]
        if len(changed) > MAX_SPANS:
            return False
        differing = sum(
            max(_chars(tokens, i1, i2), _chars(self.rep, j1, j2)) for _, i1, i2, j1, j2 in changed
        )
        if differing > MAX_DIFFERING_SHARE * longer:
            return False
        self.members.append((prompt, tokens, list(ops)))
        return True

    def candidate(self) -> Candidate:
        rep = self.rep
        if len(self.members) == 1:
            literals: tuple[str, ...] = ("".join(rep),)
            values: tuple[tuple[str, ...], ...] = ((),)
        else:
            n = len(rep)
            stable = [True] * n
            gap = [False] * (n + 1)
            for _, _, ops in self.members:
                for tag, _, _, j1, j2 in ops:
                    if tag == "equal":
                        continue
                    for j in range(j1, j2):
                        stable[j] = False
                    if j1 == j2:
                        gap[j1] = True
            segments = _segments(rep, stable, gap)
            literals = tuple("".join(rep[a:b]) for is_var, a, b in segments if not is_var)
            spans = [(a, b) for is_var, a, b in segments if not is_var]
            values = tuple(_values(tokens, ops, spans) for _, tokens, ops in self.members)
            literals, values = _literal_blanks(literals, values)
        variables = tuple(f"var{i + 1}" for i in range(len(literals) - 1))
        prompts = [p for p, _, _ in self.members]
        problem = None
        if any(PLACEHOLDER.search(lit) for lit in literals):
            problem = "its literal text contains {{...}}, which a template would read as a variable"
        else:
            for member in values:
                problem = ambiguity(literals, variables, member)
                if problem is not None:
                    break
        shapes: dict[CallShape, int] = {}
        for p in prompts:
            for shape, count in p.shapes.items():
                shapes[shape] = shapes.get(shape, 0) + count
        template = template_text(literals, variables)
        digest = hashlib.sha256(f"{self.role}\0{template}".encode()).hexdigest()
        return Candidate(
            id="c" + digest[:10],
            role=self.role,
            literals=literals,
            variables=variables,
            count=sum(p.count for p in prompts),
            texts=len(prompts),
            first_seen=min(p.first_seen for p in prompts),
            last_seen=max(p.last_seen for p in prompts),
            shapes=shapes,
            examples=tuple(dict(zip(variables, v, strict=True)) for v in values[:MAX_EXAMPLES])
            if variables
            else (),
            values=values,
            problem=problem,
        )


def _literal_blanks(
    literals: tuple[str, ...], values: tuple[tuple[str, ...], ...]
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Whitespace every value of a variable starts or ends with belongs to the literal beside
    it: the alignment can hand a space to the variable ("talk to {{var1}}(plan" with values
    "Ada ", "Bob "), and a reworded version would then render "Bob ,". Moved back, the template
    reads "talk to {{var1}} (plan" and the values "Ada", "Bob"."""
    lits = list(literals)
    columns = [list(column) for column in zip(*values, strict=True)] if values else []
    for i, column in enumerate(columns):
        if not column:
            continue
        tail = _common_blank(column, reverse=True)
        if tail:
            column[:] = [v[: len(v) - len(tail)] for v in column]
            lits[i + 1] = tail + lits[i + 1]
        head = _common_blank(column, reverse=False)
        if head:
            column[:] = [v[len(head) :] for v in column]
            lits[i] = lits[i] + head
    rows = tuple(tuple(row) for row in zip(*columns, strict=True)) if columns else values
    return tuple(lits), rows


def _common_blank(column: list[str], *, reverse: bool) -> str:
    """The whitespace every value of `column` ends (`reverse`) or starts with."""
    edges = [v[::-1] if reverse else v for v in column]
    blank = ""
    for chars in zip(*edges, strict=False):
        first = chars[0]
        if not first.isspace() or any(c != first for c in chars):
            break
        blank += first
    return blank[::-1] if reverse else blank


def _chars(tokens: list[str], start: int, end: int) -> int:
    return sum(len(t) for t in tokens[start:end])


def _segments(rep: list[str], stable: list[bool], gap: list[bool]) -> list[tuple[bool, int, int]]:
    """(is_variable, start, end) runs over the representative's tokens, literal first and last
    (possibly empty), alternating, with variables split only by spaces or punctuation merged."""
    raw: list[tuple[bool, int, int]] = []
    for k in range(len(rep) + 1):
        if gap[k]:
            raw.append((True, k, k))
        if k < len(rep):
            raw.append((not stable[k], k, k + 1))
    merged: list[tuple[bool, int, int]] = [(False, 0, 0)]
    for is_var, a, b in raw:
        last_var, la, lb = merged[-1]
        if last_var == is_var:
            merged[-1] = (is_var, la, max(lb, b))
        else:
            merged.append((is_var, a, b))
    # A literal with no letter or digit between two variables joins them.
    out: list[tuple[bool, int, int]] = []
    for i, (is_var, a, b) in enumerate(merged):
        between = 0 < i < len(merged) - 1 and not is_var
        if between and not _ALNUM.search("".join(rep[a:b])):
            _, pa, _ = out.pop()
            out.append((True, pa, b))
            continue
        if is_var and out and out[-1][0]:
            _, pa, _ = out.pop()
            out.append((True, pa, b))
            continue
        out.append((is_var, a, b))
    if out[-1][0]:
        out.append((False, len(rep), len(rep)))
    return out


def _values(
    tokens: list[str], ops: list[tuple[str, int, int, int, int]], spans: list[tuple[int, int]]
) -> tuple[str, ...]:
    """A member's text between its copies of the template's literal spans."""
    position: dict[int, int] = {}
    for tag, i1, _, j1, j2 in ops:
        if tag == "equal":
            for d in range(j2 - j1):
                position[j1 + d] = i1 + d
    bounds: list[tuple[int, int]] = []
    for index, (a, b) in enumerate(spans):
        if a == b:  # an empty literal: only first (at the start) or last (at the end)
            at = 0 if index == 0 else len(tokens)
            bounds.append((at, at))
        else:
            bounds.append((position[a], position[b - 1] + 1))
    return tuple("".join(tokens[bounds[i][1] : bounds[i + 1][0]]) for i in range(len(bounds) - 1))
