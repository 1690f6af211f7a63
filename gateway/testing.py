"""Prompt test runs: render each test, send it through the gateway's provider routing, check it.

Tests run concurrently with a bound. A test passes when every expectation holds: contains,
not_contains, regex, json_schema (the output parsed as JSON) and judge (the `gateway-judge`
prompt answers PASS or FAIL; its name and version are recorded with the verdict).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from gateway.core.expectations import Miss, check_text, judge_verdict
from gateway.core.model import PromptVersion, RegistrySnapshot, TestFailure, TestResults
from gateway.core.promptfile import PromptTest
from gateway.core.rendering import Message, coerce_variables, render
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    TestRunAborted,
    UpstreamReset,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.prompts import PromptRegistry
from gateway.settings import Settings
from gateway.stores import codec
from gateway.upstream.base import Upstream
from gateway.upstream.routing import Router

JUDGE = "gateway-judge"


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """One test's result."""

    test_id: str
    misses: tuple[Miss, ...]
    output: str

    @property
    def passed(self) -> bool:
        return not self.misses


class TestRunner:
    """Runs a version's tests against its model through the configured providers."""

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        snapshot: RegistrySnapshot,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
    ) -> None:
        self._router = Router(settings.routes)
        self._upstream = upstream
        self._snapshot = snapshot
        self._api_key = api_key
        self._limit = asyncio.Semaphore(concurrency)

    async def run(
        self,
        version: PromptVersion,
        tests: Sequence[PromptTest],
        *,
        now: datetime,
        on_done: Callable[[TestOutcome], None] | None = None,
    ) -> tuple[TestResults, list[TestOutcome]]:
        """Run every test; return the results to store and each test's outcome."""

        async def one(test: PromptTest) -> TestOutcome:
            async with self._limit:
                outcome = await self._run_one(version, test)
            if on_done is not None:
                on_done(outcome)
            return outcome

        try:
            async with asyncio.TaskGroup() as group:  # the first abort cancels the rest
                running = [group.create_task(one(t)) for t in tests]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        outcomes = [task.result() for task in running]
        passed = sum(o.passed for o in outcomes)
        failures = tuple(
            TestFailure(o.test_id, m.expectation, m.detail, o.output[:2000])
            for o in outcomes
            for m in o.misses
        )
        total = len(outcomes)
        results = TestResults(
            total=total,
            passed=passed,
            failed=total - passed,
            pass_rate=passed / total if total else 0.0,
            failures=failures,
            ran_at=now,
        )
        return results, outcomes

    async def _run_one(self, version: PromptVersion, test: PromptTest) -> TestOutcome:
        try:
            rendered = render(version.template, coerce_variables(test.variables), version.label)
        except GatewayError as exc:
            return TestOutcome(test.id, (Miss("render", exc.message),), "")
        messages = [*rendered, *test.messages]
        try:
            output = await self.complete(version.model, messages, version)
        except TestRunAborted:
            raise
        except GatewayError as exc:
            return TestOutcome(test.id, (Miss("request", exc.message),), "")
        misses = check_text(test.expect, output)
        if test.expect.json_schema is not None:
            misses += _check_schema(test.expect.json_schema, output)
        if test.expect.judge is not None:
            misses += await self._judge(test.expect.judge, output)
        return TestOutcome(test.id, tuple(misses), output)

    async def complete(
        self, model: str | None, messages: Sequence[Message], version: PromptVersion | None
    ) -> str:
        """One chat completion through the routing; the answer's text.

        Raises TestRunAborted when the provider cannot be asked (unreachable, timed out, broke
        off, or answered 401, 403, 408, 429 or 5xx): that says nothing about the prompt. Its
        other 4xx answers (a parameter the model refuses) are the version's fault: GatewayError.
        """
        body: dict[str, Any] = {
            "model": model or "gpt-4o-mini",
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        if version is not None and version.temperature is not None:
            body["temperature"] = version.temperature
        if version is not None and version.max_tokens is not None:
            body["max_tokens"] = version.max_tokens
        provider = self._router.provider_for(body["model"])
        headers = [("content-type", "application/json"), ("accept-encoding", "identity")]
        key = provider.api_key or self._api_key
        if key:
            headers.append(("authorization", f"Bearer {key}"))
        try:
            response = await self._upstream.send(
                provider, "POST", "/chat/completions", headers, orjson.dumps(body)
            )
            try:
                raw = await response.read()
            finally:
                await response.close()
        except (UpstreamUnreachable, UpstreamReset, UpstreamTimeout) as exc:
            raise _aborted(exc.message) from None
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = {}
        if response.status >= 400:
            error = doc.get("error") if isinstance(doc, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            if response.status in _NOT_THE_PROMPTS_FAULT or response.status >= 500:
                raise _aborted(
                    f"{provider.label} answered {response.status}: {message or 'no message'}"
                )
            raise GatewayError(f"provider {provider.name} answered {response.status}: {message}")
        try:
            content = doc["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise GatewayError(f"provider {provider.name} sent no message content") from None
        return content if isinstance(content, str) else ""

    async def _judge(self, criterion: str, output: str) -> list[Miss]:
        state = self._snapshot.prompts.get(JUDGE)
        judge = (state.active_version or state.newest) if state is not None else None
        if judge is None:
            return [
                Miss("judge", f"the {JUDGE} prompt is not in the registry; push config/prompts")
            ]
        try:
            rendered = render(
                judge.template, {"criterion": criterion, "output": output}, judge.label
            )
            answer = await self.complete(judge.model, rendered, judge)
        except TestRunAborted:
            raise
        except GatewayError as exc:
            return [Miss("judge", f"{judge.label} could not answer: {exc.message}")]
        verdict, reason = judge_verdict(answer)
        if verdict is True:
            return []
        said = "FAIL" if verdict is False else "neither PASS nor FAIL"
        return [Miss("judge", f"{judge.label} said {said}: {reason}")]


_NOT_THE_PROMPTS_FAULT = frozenset({401, 403, 408, 429})


def _aborted(reason: str) -> TestRunAborted:
    """`reason` names the provider and what went wrong."""
    return TestRunAborted(
        f"Tests not run: {reason.rstrip('.')}. Nothing was stored; the version's tested mark "
        "is unchanged."
    )


def _check_schema(schema: Any, output: str) -> list[Miss]:
    try:
        doc = orjson.loads(output)
    except orjson.JSONDecodeError:
        return [Miss("json_schema", "the output is not JSON")]
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as exc:
        return [Miss("json_schema", exc.message)]
    except jsonschema.SchemaError as exc:
        return [Miss("json_schema", f"the schema itself is invalid: {exc.message}")]
    return []


async def run_and_record(
    registry: PromptRegistry,
    settings: Settings,
    upstream: Upstream,
    version: PromptVersion,
    tests: Sequence[PromptTest],
    *,
    actor: str,
    concurrency: int,
    now: datetime,
    on_done: Callable[[TestOutcome], None] | None = None,
) -> dict[str, Any]:
    """The test use case of the command line, the admin API and the console: run `tests` on
    `version` through `upstream`, store the pass rate (is_tested follows the promotion
    threshold), and return the result as `gateway prompts test --json` prints it.

    Raises TestRunAborted (nothing stored) when the tests cannot reach a provider.
    """
    runner = TestRunner(
        settings,
        upstream,
        await registry.store.snapshot(),
        api_key=settings.test_api_key,
        concurrency=concurrency,
    )
    results, _ = await runner.run(version, tests, now=now, on_done=on_done)
    await registry.record_test_run(version.name, version.version, results, actor=actor)
    threshold = settings.promotion.threshold
    head: dict[str, Any] = {
        "name": version.name,
        "version": version.version,
        "threshold": threshold,
        "is_tested": results.pass_rate >= threshold,
    }
    return head | codec.results_to_dict(results)


async def served_tests(settings: Settings, name: str) -> list[PromptTest]:
    """The tests of prompt `name` in the server's prompts_dir (what a test run without a file
    runs); InvalidRequest when its files hold none."""
    from gateway.files import load_prompt_files  # file I/O: off the event loop below

    where = settings.prompts_dir
    if not await asyncio.to_thread(Path(where).exists):
        raise InvalidRequest(
            f"No prompt files at {where}, the server's prompts_dir, to take the tests of {name!r} "
            "from: set prompts_dir in its config file to the folder of your prompt files (a "
            "relative path is from the folder the server runs in)."
        )
    files = await asyncio.to_thread(load_prompt_files, [where])
    tests = [t for f in files if f.name == name for t in f.tests]
    if not tests:
        raise InvalidRequest(
            f"No tests for prompt {name!r} in {where}; add a tests: list to its file."
        )
    return tests
