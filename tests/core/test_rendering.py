"""Rendering: `{{var}}` placeholders, one pass, typed values, the missing-variables message."""

from __future__ import annotations

import pytest

from gateway.core.rendering import Message, coerce_variables, compile_template, render
from gateway.errors import InvalidPromptVariables, MissingPromptVariables


def template(*contents: str):  # type: ignore[no-untyped-def]
    return compile_template([Message("system", c) for c in contents])


def test_placeholders_allow_whitespace_inside_the_braces() -> None:
    """`{{ name }}` and `{{name}}` are the same placeholder."""
    out = render(template("Hi {{ name }} and {{name}}!"), {"name": "Ann"}, "p@1.0.0")
    assert out == (Message("system", "Hi Ann and Ann!"),)


def test_substitution_is_a_single_pass() -> None:
    """A value that itself contains a placeholder is inserted literally, never expanded."""
    out = render(template("A {{a}} B {{b}}"), {"a": "{{b}}", "b": "x"}, "p@1.0.0")
    assert out[0].content == "A {{b}} B x"


def test_variables_are_listed_once_in_order_of_first_use() -> None:
    """A template's variables are derived from its placeholders."""
    assert template("{{b}} {{a}}", "{{b}} {{c}}").variables == ("b", "a", "c")


def test_missing_variables_message_is_exact() -> None:
    """The message names the prompt label and every missing variable, in template order."""
    tpl = template("{{company}} {{timezone}} {{tools}}")
    with pytest.raises(MissingPromptVariables) as caught:
        render(tpl, {"company": "Acme"}, "support-agent@1.2.0")
    assert (
        caught.value.message == "Missing variables for prompt support-agent@1.2.0: timezone, tools"
    )
    assert caught.value.status == 400


def test_extra_variables_are_ignored() -> None:
    """Variables the template does not use change nothing."""
    out = render(template("{{a}}"), {"a": "1", "zzz": "2"}, "p@1.0.0")
    assert out[0].content == "1"


def test_text_without_placeholders_renders_as_is() -> None:
    """A literal message passes through, braces that are not placeholders included."""
    out = render(template('JSON looks like {"a": {1}} and {{ not-a-var }}'), {}, "p@1.0.0")
    assert out[0].content == 'JSON looks like {"a": {1}} and {{ not-a-var }}'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("x", "x"), (3, "3"), (2.5, "2.5"), (True, "True"), (False, "False")],
)
def test_scalars_become_strings(raw: object, expected: str) -> None:
    """Numbers and booleans are converted with str()."""
    assert coerce_variables({"v": raw}) == {"v": expected}


@pytest.mark.parametrize("raw", [{"a": 1}, [1, 2], None])
def test_objects_lists_and_null_are_refused(raw: object) -> None:
    """Structured values are a 400 invalid_prompt_variables naming the variable."""
    with pytest.raises(InvalidPromptVariables, match="'v'"):
        coerce_variables({"v": raw})
