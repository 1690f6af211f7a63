"""Rendering: `{{var}}` placeholders, one pass, typed values, the missing-variables message."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.rendering import (
    Api,
    Message,
    RenderedMessage,
    coerce_request_variables,
    coerce_variables,
    compile_template,
    render,
    render_request,
)
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


IMAGE = {"type": "input_image", "image_url": "https://x/logo.png"}
CHAT_IMAGE = {"type": "image_url", "image_url": {"url": "https://x/logo.png"}}
PARTS: dict[Api, list[dict[str, Any]]] = {
    "responses": [IMAGE, {"type": "input_file", "file_id": "file-1"}],
    "chat": [
        CHAT_IMAGE,
        {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ],
}


def request(api: Api, *messages: Message, **raw: object) -> tuple[RenderedMessage, ...]:
    values = coerce_request_variables(raw, api)
    return render_request(compile_template(messages), values, "p@1.0.0", api)


@pytest.mark.parametrize(
    ("api", "part"), [(api, part) for api, parts in PARTS.items() for part in parts]
)
@pytest.mark.parametrize("content", ["{{logo}}", " {{ logo }}\n"])
def test_a_part_that_is_a_messages_whole_content_becomes_that_content(
    api: Api, part: dict[str, Any], content: str
) -> None:
    """A part of the request's API fills a message whose whole content is its placeholder."""
    out = request(api, Message("user", content), logo=part)
    assert out == (RenderedMessage("user", (part,)),)


@pytest.mark.parametrize(("api", "text_type"), [("chat", "text"), ("responses", "input_text")])
@pytest.mark.parametrize("sent_type", ["text", "input_text"])
def test_text_parts_are_text_inside_running_text_and_a_part_alone(
    api: Api, text_type: str, sent_type: str
) -> None:
    """A text part of either API gives its text in running text, and the API's text part alone."""
    part = {"type": sent_type, "text": "CET"}
    out = request(api, Message("user", "Zone: {{tz}}."), Message("user", "{{tz}}"), tz=part)
    assert out == (
        RenderedMessage("user", "Zone: CET."),
        RenderedMessage("user", ({"type": text_type, "text": "CET"},)),
    )


@pytest.mark.parametrize(
    ("api", "part"), [(api, part) for api, parts in PARTS.items() for part in parts]
)
def test_a_part_inside_running_text_is_refused_naming_it(api: Api, part: dict[str, Any]) -> None:
    """A non-text part used inside running text is 400 invalid_prompt_variables naming it."""
    with pytest.raises(InvalidPromptVariables, match=r"'logo' is a content part .* running text"):
        request(api, Message("user", "Our logo: {{logo}}"), logo=part)


@pytest.mark.parametrize(
    ("api", "part", "fits"),
    [
        ("chat", IMAGE, "image_url"),
        ("chat", {"type": "input_file", "file_id": "f"}, "file"),
        ("responses", CHAT_IMAGE, "input_image"),
        ("responses", {"type": "input_audio", "input_audio": {}}, "input_file"),
        ("responses", {"type": "file", "file": {}}, "input_file"),
    ],
)
def test_a_part_of_the_other_api_is_refused_naming_it_and_what_fits(
    api: Api, part: dict[str, Any], fits: str
) -> None:
    """A part the request's API does not take is 400 naming the variable and the types it takes."""
    with pytest.raises(InvalidPromptVariables, match=f"'logo' .*{part['type']}.*{fits}") as caught:
        request(api, Message("user", "{{logo}}"), logo=part)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "raw",
    [{"type": "video", "url": "x"}, {"type": "input_text"}, {"text": "no type"}, [IMAGE]],
)
def test_unknown_or_malformed_parts_are_refused(raw: object) -> None:
    """Objects that are not a known content part are refused as before, naming the variable."""
    with pytest.raises(InvalidPromptVariables, match="'logo'"):
        coerce_request_variables({"logo": raw}, "responses")


def test_responses_instructions_take_text_parts_and_refuse_others() -> None:
    """On /v1/responses a system message stays text: a text part gives its text, an image is 400."""
    system = Message("system", "{{who}}")
    assert request("responses", system, who={"type": "input_text", "text": "Acme"}) == (
        RenderedMessage("system", "Acme"),
    )
    with pytest.raises(InvalidPromptVariables, match=r"'who' .* `instructions`"):
        request("responses", system, who=IMAGE)


def test_text_renderings_refuse_non_text_parts() -> None:
    """The text renderer (CLI, prompt tests) takes text parts as text and refuses other parts."""
    assert coerce_variables({"v": {"type": "input_text", "text": "t"}}) == {"v": "t"}
    with pytest.raises(InvalidPromptVariables, match="'v' is a content part of type 'input_image'"):
        coerce_variables({"v": IMAGE})


def test_request_rendering_of_text_is_the_text_rendering() -> None:
    """With text values a request renders exactly what the text renderer does."""
    messages = (Message("system", "A {{a}} B {{b}}"), Message("user", "{{a}}"))
    tpl = compile_template(messages)
    values = {"a": "{{b}}", "b": "x"}
    text = render(tpl, values, "p@1.0.0")
    assert request("chat", *messages, **values) == tuple(
        RenderedMessage(m.role, m.content) for m in text
    )
