"""Candidates: captured texts grouped into templates with difflib, and their ambiguity check."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.core.candidates import find_candidates, template_pattern
from gateway.core.capture import CallShape, sighting
from tests.factories import T0

SHAPE = CallShape("gpt-4o-mini", 0.2, None)
SUPPORT = (
    "You are the support assistant of Acme Cloud. You are talking to {name}, a customer on the "
    "{plan} plan. Be concise and friendly, and never reveal internal notes."
)
PEOPLE = [("Ada Lovelace", "Pro"), ("Bob", "Free"), ("Carol King", "Enterprise"), ("Dan", "Pro")]


def captured(text: str, count: int = 1, role: str = "system"):  # type: ignore[no-untyped-def]
    return sighting(role, text, SHAPE, T0, count)


def test_texts_differing_in_spans_become_one_template() -> None:
    """Texts differing in a name and a plan give one candidate with var1 and var2, the count of
    every call, and examples of the values (multi-word names whole)."""
    prompts = [captured(SUPPORT.format(name=n, plan=p), i + 1) for i, (n, p) in enumerate(PEOPLE)]
    (candidate,) = find_candidates(prompts)
    assert candidate.template == SUPPORT.format(name="{{var1}}", plan="{{var2}}")
    assert candidate.variables == ("var1", "var2")
    assert (candidate.count, candidate.texts, candidate.problem) == (10, 4, None)
    assert candidate.examples[0] == {"var1": "Dan", "var2": "Pro"}  # the most called first
    assert {"var1": "Ada Lovelace", "var2": "Pro"} in candidate.values_as_dicts()
    assert candidate.models == {"gpt-4o-mini": 10}


def test_different_prompts_stay_separate() -> None:
    """Texts differing in more than a bounded share stay separate candidates, without variables;
    so do texts of different roles."""
    prompts = [
        captured(SUPPORT.format(name="Ada", plan="Pro")),
        captured("You translate English into French, keeping the tone of the original text."),
        captured(SUPPORT.format(name="Ada", plan="Pro"), role="developer"),
    ]
    found = find_candidates(prompts)
    assert len(found) == 3
    assert all(c.variables == () for c in found)


def test_a_single_text_is_a_literal_candidate() -> None:
    """One text alone is a candidate whose template is the text itself."""
    (candidate,) = find_candidates([captured("You help.", 7)])
    assert (candidate.template, candidate.count, candidate.examples) == ("You help.", 7, ())


def test_ids_are_stable() -> None:
    """The same captured prompts give the same candidate ids, whatever their order."""
    prompts = [captured(SUPPORT.format(name=n, plan=p)) for n, p in PEOPLE]
    assert [c.id for c in find_candidates(prompts)] == [
        c.id for c in find_candidates(prompts[::-1])
    ]


def test_a_value_holding_the_literal_around_it_is_a_problem() -> None:
    """A captured value that contains the literal text around it makes the candidate ambiguous:
    it carries a problem naming the value, decided here rather than per request."""
    text = "Dear {a} and {b}, welcome to the long-running support service of Acme for all."
    prompts = [
        captured(text.format(a="Tom and Jerry", b="Ann"), 5),
        captured(text.format(a="Bob", b="Al"), 1),
        captured(text.format(a="Eve", b="Max"), 1),
    ]
    (candidate,) = find_candidates(prompts)
    assert candidate.variables == ("var1", "var2")
    assert candidate.problem is not None
    assert "'Jerry and Ann' of var2 contains ' and '" in candidate.problem


def test_literal_braces_are_a_problem() -> None:
    """A text holding {{...}} cannot become a template (the braces would read as a variable)."""
    (candidate,) = find_candidates([captured("Reply with {{answer}} only.")])
    assert candidate.problem is not None and "{{...}}" in candidate.problem


@pytest.mark.parametrize(
    ("literals", "text", "values"),
    [
        (("Hi ", ", on ", "."), "Hi Ada Lovelace, on Pro.", ("Ada Lovelace", "Pro")),
        (("", " is here"), "Bob is here", ("Bob",)),
        (("Hi ", ""), "Hi there\nfriend", ("there\nfriend",)),
    ],
)
def test_pattern_reads_values(
    literals: tuple[str, ...], text: str, values: tuple[str, ...]
) -> None:
    """The serving pattern is anchored on every literal and reads each variable between them."""
    match = template_pattern(literals).fullmatch(text)
    assert match is not None and match.groups() == values


def test_last_seen_spans_the_group() -> None:
    """A candidate's first and last seen span its members'."""
    a = sighting("system", SUPPORT.format(name="A", plan="Pro"), SHAPE, T0)
    b = sighting("system", SUPPORT.format(name="B", plan="Pro"), SHAPE, T0 + timedelta(hours=1))
    (candidate,) = find_candidates([a, b])
    assert (candidate.first_seen, candidate.last_seen) == (T0, T0 + timedelta(hours=1))


def test_a_space_the_alignment_hands_to_a_variable_stays_literal() -> None:
    """The tester's openai-node app: names of one and two words before "(plan ...)". The
    alignment gave var1 the space before "(" ("Dana ", and a reworded version rendered "Dana
    ,"); every value's shared edge whitespace belongs to the literal."""
    text = "NODE app: you talk to {name} (plan {plan}). Stay short."
    names = [
        "Ada Lovelace",
        "Bob",
        "Chen Wei",
        "Dana",
        "Bob 7",
        "Eve",
        "Frank Li",
        "Gus",
        "Hal",
        "Ivy",
    ]
    prompts = [
        captured(text.format(name=n, plan="Gold" if i % 2 else "Basic"))
        for i, n in enumerate(names)
    ]
    (candidate,) = find_candidates(prompts)
    assert candidate.template == text.format(name="{{var1}}", plan="{{var2}}")
    for value in candidate.values_as_dicts():
        assert value["var1"] in names and value["var2"] in ("Gold", "Basic")
    assert template_pattern(candidate.literals).fullmatch(text.format(name="Dana", plan="Gold"))
