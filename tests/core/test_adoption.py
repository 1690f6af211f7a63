"""Adoption's pure part: the adopt plan's refusals, and matching texts to adopted templates."""

from __future__ import annotations

import random
import time

import pytest

from gateway.core.adoption import KEY_CHARS, build_index, plan_adopt
from gateway.core.candidates import find_candidates
from gateway.core.capture import CallShape, sighting
from gateway.core.model import PromptState, RegistrySnapshot
from gateway.core.registry import Change
from gateway.errors import InvalidRequest, VersionConflict
from tests.factories import T0

TEXT = "You are the assistant of Acme Cloud. The customer is {name}, on the {plan} plan. Be brief."


SHAPE = CallShape("gpt-4o-mini", 0.3, 200)


def candidate(text: str = TEXT, shape: CallShape = SHAPE):  # type: ignore[no-untyped-def]
    prompts = [
        sighting("system", text.format(name="Ada Lovelace", plan="Pro"), shape, T0, 3),
        sighting(
            "system", text.format(name="Bob", plan="Free"), CallShape("gpt-4o", None, None), T0
        ),
    ]
    (found,) = find_candidates(prompts)
    return found


def adopted(name: str, change: Change) -> PromptState:
    version = change.versions[0]
    return PromptState(name, versions=(version,), active=change.active, adoption=change.adoption)


def test_adopt_creates_an_active_bound_version() -> None:
    """Version 1.0.0 holds the template with renamed variables, the most common call's model and
    parameters, is active, bound and audited."""
    change = plan_adopt(
        PromptState("acme"), candidate(), {"var1": "customer_name"}, new_id="i", actor="a", now=T0
    )
    (version,) = change.versions
    assert version.messages[0].content == TEXT.format(name="{{customer_name}}", plan="{{var2}}")
    assert (version.model, version.temperature, version.max_tokens) == ("gpt-4o-mini", 0.3, 200)
    assert version.variables == ("customer_name", "var2")
    assert (change.active, change.activation_changed) == ("1.0.0", True)
    assert change.adoption is not None and change.adoption.version == "1.0.0"
    assert [e.action for e in change.audit] == ["version.create", "prompt.adopt"]


@pytest.mark.parametrize(
    ("renames", "message"),
    [
        ({"var9": "x"}, "has no variable var9 .it has var1, var2."),
        ({"var1": "9lives"}, "Variable name '9lives' is invalid"),
        ({"var1": "var2"}, "would both be named var2"),
    ],
)
def test_bad_variable_names_are_refused(renames: dict[str, str], message: str) -> None:
    """A variable the template lacks, a bad name, or two variables named alike are refused."""
    with pytest.raises(InvalidRequest, match=message):
        plan_adopt(PromptState("acme"), candidate(), renames, new_id="i", actor="a", now=T0)


def test_an_existing_name_is_refused() -> None:
    """Adoption makes a new prompt: a name that has versions is a conflict."""
    state = adopted(
        "acme", plan_adopt(PromptState("acme"), candidate(), {}, new_id="i", actor="a", now=T0)
    )
    with pytest.raises(VersionConflict, match="already exists"):
        plan_adopt(state, candidate(), {}, new_id="j", actor="a", now=T0)


def index_of(*states: PromptState):  # type: ignore[no-untyped-def]
    return build_index(RegistrySnapshot({s.name: s for s in states}))


def test_matching_reads_values_and_misses_other_texts() -> None:
    """A text with the literal parts equal matches with its values; an exact template matches
    by look-up; anything else misses."""
    acme = adopted(
        "acme",
        plan_adopt(
            PromptState("acme"),
            candidate(),
            {"var1": "customer_name"},
            new_id="i",
            actor="a",
            now=T0,
        ),
    )
    (literal,) = find_candidates(
        [sighting("system", "You translate.", CallShape(None, None, None), T0)]
    )
    plain = adopted(
        "plain", plan_adopt(PromptState("plain"), literal, {}, new_id="j", actor="a", now=T0)
    )
    index = index_of(acme, plain)
    found = index.match(TEXT.format(name="Grace Hopper", plan="Team"))
    assert found is not None
    assert found.template.name == "acme" and found.template.version_id == "i"
    assert found.values == {"customer_name": "Grace Hopper", "var2": "Team"}
    exact = index.match("You translate.")
    assert exact is not None and (exact.template.name, exact.values) == ("plain", {})
    assert index.match("You translate!") is None
    assert (
        index.match(TEXT.format(name="Grace", plan="Team").replace("Be brief.", "Be long.")) is None
    )
    assert index.match("") is None


def test_whitespace_variants_counted_together_are_served_together() -> None:
    """Capture counts texts that differ only in whitespace as one (the fingerprint collapses
    it); matching does too, so every spelling that was counted is served."""
    (literal,) = find_candidates(
        [
            sighting("system", "Fixed prompt  with two spaces here.", SHAPE, T0, 3),
            sighting("system", "Fixed prompt with two spaces here.", SHAPE, T0, 5),
        ]
    )
    assert literal.count == 8
    fixed = adopted(
        "fixed", plan_adopt(PromptState("fixed"), literal, {}, new_id="f", actor="a", now=T0)
    )
    acme = adopted(
        "acme",
        plan_adopt(PromptState("acme"), candidate(), {}, new_id="i", actor="a", now=T0),
    )
    index = index_of(fixed, acme)
    for text in (
        "Fixed prompt  with two spaces here.",
        "Fixed prompt with two spaces here.",
        " Fixed prompt\nwith two spaces here.\n",
    ):
        found = index.match(text)
        assert found is not None and found.template.name == "fixed", text
    spaced = TEXT.format(name="Grace  Hopper", plan="Team").replace(". The", ".\n\nThe")
    found = index.match(spaced)
    assert found is not None and found.values == {"var1": "Grace Hopper", "var2": "Team"}


@pytest.mark.parametrize(
    "text",
    [
        "{name} is a customer on {plan}. Help them with Acme Cloud, politely and briefly.",
        "Help the customers of Acme Cloud politely. This one is {name} on {plan}",
        "Hi {name}, you help with Acme Cloud billing questions today: {plan}",
    ],
)
def test_templates_with_variable_or_short_ends_match(text: str) -> None:
    """Templates that begin or end with a variable, or whose literal ends are shorter than the
    key, are found too."""
    (found,) = find_candidates(
        [
            sighting(
                "system", text.format(name="Ada", plan="Pro plan"), CallShape(None, None, None), T0
            ),
            sighting(
                "system", text.format(name="Bob", plan="Free plan"), CallShape(None, None, None), T0
            ),
        ]
    )
    assert found.problem is None, found.problem
    state = adopted("p", plan_adopt(PromptState("p"), found, {}, new_id="i", actor="a", now=T0))
    hit = index_of(state).match(text.format(name="Zoe Q", plan="Team plan"))
    assert hit is not None and set(hit.values.values()) >= {"Zoe Q"}
    assert KEY_CHARS == 16


def test_an_empty_registry_has_an_empty_index() -> None:
    """No adopted prompts: the index is empty and matches nothing."""
    index = index_of(PromptState("x"))
    assert index.size == 0 and index.match("anything") is None


def random_texts(count: int, words: int, vocabulary: int, seed: int = 13) -> list[str]:
    rnd = random.Random(seed)
    vocab = [
        "".join(rnd.choices("abcdefghijklmnop", k=rnd.randint(2, 8))) for _ in range(vocabulary)
    ]
    return [" ".join(rnd.choices(vocab, k=words)) for _ in range(count)]


@pytest.mark.parametrize("vocabulary", [50, 100_000])
def test_adoption_grouping_of_many_distinct_long_texts_is_bounded(vocabulary: int) -> None:
    """1,000 distinct 300-word texts (from a tiny vocabulary, where every pair passes the cheap
    prefilters, and from a large one) group within the budgets: each stays its own candidate."""
    shape = CallShape(None, None, None)
    prompts = [sighting("system", t, shape, T0) for t in random_texts(1000, 300, vocabulary)]
    began = time.monotonic()
    found = find_candidates(prompts, clock=time.monotonic)
    assert time.monotonic() - began < 8
    assert sum(c.texts for c in found) == 1000
    assert len(found) == 1000  # each text its own candidate: none merged into another


def test_a_text_without_variables_that_starts_with_whitespace_is_served() -> None:
    """An app's prompt from a triple-quoted string (a newline and indent first): adopted with no
    variable, its one literal is both the first and the last, and both of its ends are trimmed
    for matching, so the same text matches."""
    text = "\n    You are a helpful assistant for Acme.\n"
    (literal,) = find_candidates([sighting("system", text, SHAPE, T0, 3)])
    indented = adopted(
        "indented", plan_adopt(PromptState("indented"), literal, {}, new_id="k", actor="a", now=T0)
    )
    found = index_of(indented).match(text)
    assert found is not None and found.template.name == "indented"
