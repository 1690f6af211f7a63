"""The error tree: every class maps to an HTTP status and OpenAI's error shape."""

from __future__ import annotations

import inspect

import pytest

from gateway import errors

CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.GatewayError)
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_maps_to_status_type_and_code(cls: type[errors.GatewayError]) -> None:
    """Each class has an HTTP status, an OpenAI type and code, and renders OpenAI's body."""
    assert 400 <= cls.status <= 599
    body = cls("something went wrong", param="x").to_openai()
    assert body == {
        "error": {
            "message": "something went wrong",
            "type": cls.type,
            "param": "x",
            "code": cls.code,
        }
    }


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_is_in_the_drawn_tree(cls: type[errors.GatewayError]) -> None:
    """The module docstring draws every class with its status and code."""
    assert errors.__doc__ is not None
    line = next(ln for ln in errors.__doc__.splitlines() if f" {cls.__name__} " in ln)
    assert str(cls.status) in line and cls.code in line


def test_codes_are_unique() -> None:
    """No two classes share a code, so clients can tell them apart."""
    codes = [cls.code for cls in CLASSES]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (errors.MissingPromptVariables, 400, "missing_prompt_variables"),
        (errors.InvalidPromptVariables, 400, "invalid_prompt_variables"),
        (errors.PromptNotFound, 404, "prompt_not_found"),
        (errors.NoServableVersion, 404, "no_servable_version"),
        (errors.VersionConflict, 409, "version_conflict"),
        (errors.PromotionRefused, 409, "promotion_refused"),
    ],
)
def test_contract_codes(cls: type[errors.GatewayError], status: int, code: str) -> None:
    """The codes PRODUCT.md names are exactly these."""
    assert (cls.status, cls.code) == (status, code)
