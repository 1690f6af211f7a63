"""`RemoteBackend`: the registry's operations as calls to a gateway's admin API (PRODUCT §6.1).

httpx, the stack's HTTP client, with `Authorization: Bearer <token>`. The API answers the shapes
the local backend builds; its errors (OpenAI's shape) come back as the `GatewayError` class of
their `code`, with the server's message, so a command fails the same way against either backend.
401 and 403 add what to do about the token; a gateway that cannot be reached is one line naming
the URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import orjson

from gateway import __version__
from gateway.cli.backend import Json, TestProgress
from gateway.core.model import Environment, PromptState
from gateway.core.promptfile import PromptFile
from gateway.errors import (
    GatewayError,
    InvalidPrompt,
    InvalidRequest,
    PromptNotFound,
    StoreUnavailable,
)
from gateway.files import ExperimentSpec, read_yaml
from gateway.prompts import check_push
from gateway.stores import codec

TIMEOUT = httpx.Timeout(60.0, connect=10.0)
"""Every call but a test run: reads and writes answer within milliseconds."""

TEST_TIMEOUT = httpx.Timeout(None, connect=10.0)
"""A test run waits for every test's provider call (each bounded by the server's read timeout)."""


def _error_classes() -> dict[str, type[GatewayError]]:
    """Every GatewayError class by its code (codes are unique: tests/test_errors.py)."""
    found: dict[str, type[GatewayError]] = {}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_class(code: str, status: int) -> type[GatewayError]:
    """The GatewayError class of an API error `code`; a code the tree lacks (Litestar's own,
    such as `method_not_allowed`) gets a subclass carrying it, so `--json` shows the API's code."""
    known = _error_classes().get(code)
    if known is not None:
        return known
    return cast(
        type[GatewayError], type("AdminApiError", (GatewayError,), {"code": code, "status": status})
    )


class RemoteBackend:
    """A gateway's /admin API at `url` (the gateway's base URL, `http://host:port`)."""

    def __init__(
        self, url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(
                f"The gateway URL {url!r} (GATEWAY_URL or --url) must start with http:// or "
                "https://, e.g. http://127.0.0.1:8080."
            )
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            # /v1 is the proxy: a call there would be forwarded to the provider, token and all.
            raise InvalidRequest(
                f"The gateway URL {url!r} (GATEWAY_URL or --url) ends in /v1, the OpenAI "
                "endpoint apps use; give the gateway's base URL instead, e.g. "
                f"{self.url.removesuffix('/v1')}."
            )
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"prompt-gateway-cli/{__version__}",
            },
            timeout=TIMEOUT,
            transport=transport,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        content: bytes | None = None,
        params: Mapping[str, str | int | None] | None = None,
        limits: httpx.Timeout = TIMEOUT,
    ) -> Any:
        """The JSON the API answers; its error as the GatewayError of its code.

        The request body is `body` as JSON, or `content`, bytes of JSON already encoded.
        """
        if body is not None:
            content = orjson.dumps(body)
        headers = {"content-type": "application/json"} if content is not None else {}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._client.request(
                method, path, content=content, headers=headers, params=query, timeout=limits
            )
        except httpx.TimeoutException:
            raise StoreUnavailable(
                f"The gateway at {self.url} did not answer {method} {path} in time; check that "
                "it runs and is not overloaded."
            ) from None
        except httpx.TransportError as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreUnavailable(
                f"Could not reach the gateway at {self.url} ({reason}); check GATEWAY_URL "
                "(or --url) and that the gateway runs."
            ) from None
        if response.is_success:
            return orjson.loads(response.content)
        raise self._error(response)

    def _error(self, response: httpx.Response) -> GatewayError:
        try:
            error = orjson.loads(response.content)["error"]
            message, code = str(error["message"]), str(error["code"])
            param = error.get("param")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            request = response.request
            return GatewayError(
                f"{request.method} {request.url} answered {response.status_code} "
                f"{response.reason_phrase}, not an admin API error: is {self.url} a Prompt "
                "Gateway (GATEWAY_URL or --url)?"
            )
        if response.status_code == 401:
            message += (
                f" Set GATEWAY_ADMIN_TOKEN (or --token) to an admin token the gateway at "
                f"{self.url} knows."
            )
        elif response.status_code == 403:
            message += " Use a token with that role (GATEWAY_ADMIN_TOKEN or --token)."
        elif code == "not_found":  # no such route (prompts and experiments have codes of their own)
            message = (
                f"{self.url} has no admin API at {response.request.url.path} ({message}); give "
                "the gateway's base URL, as in http://host:8080."
            )
        return error_class(code, response.status_code)(message, param=param)

    async def _state(self, name: str) -> PromptState:
        """The prompt as the server holds it (no versions when it has none)."""
        try:
            detail = await self.prompt(name)
        except PromptNotFound:
            return PromptState(name)
        active = detail["active"]
        versions = tuple(
            codec.load_version(orjson.dumps(v), active=active) for v in detail["versions"]
        )
        return PromptState(name, versions=versions, active=active)

    # ---- prompts -----------------------------------------------------------------------------

    async def push(self, files: Sequence[PromptFile]) -> list[Json]:
        # The API takes one file per call. Checking every file against the server's versions
        # first keeps push all-or-nothing, as it is on the store (the server checks each file
        # again as it writes it).
        states = {name: await self._state(name) for name in dict.fromkeys(f.name for f in files)}
        for file in files:
            check_push(file, states[file.name])
        results: list[Json] = []
        for file in files:
            results += await self._call(
                "POST", "/admin/prompts", content=_contents(file), params={"source": file.source}
            )
        return results

    async def prompts(self) -> list[Json]:
        return cast(list[Json], await self._call("GET", "/admin/prompts"))

    async def prompt(self, name: str) -> Json:
        return cast(Json, await self._call("GET", f"/admin/prompts/{_part(name)}"))

    async def version(self, name: str, version: str) -> Json:
        path = f"/admin/prompts/{_part(name)}/versions/{_part(version)}"
        return cast(Json, await self._call("GET", path))

    async def render(self, name: str, version: str, variables: Mapping[str, object]) -> Json:
        path = f"/admin/prompts/{_part(name)}/versions/{_part(version)}/render"
        return cast(Json, await self._call("POST", path, body={"variables": dict(variables)}))

    async def resolve(self, name: str, env: Environment | None, user: str | None) -> Json:
        path = f"/admin/prompts/{_part(name)}/resolve"
        return cast(Json, await self._call("GET", path, params={"env": env, "user": user}))

    async def test(
        self,
        name: str,
        version: str,
        file: PromptFile,
        *,
        concurrency: int,
        progress: TestProgress,
    ) -> Json:
        # The server runs the tests of the file sent, which is what the user has locally; it
        # answers at the end, so progress is indeterminate.
        progress.start(f"{name}@{version}", None)
        path = f"/admin/prompts/{_part(name)}/versions/{_part(version)}/test"
        return cast(
            Json,
            await self._call(
                "POST",
                path,
                content=_contents(file),
                params={"source": file.source, "concurrency": concurrency},
                limits=TEST_TIMEOUT,
            ),
        )

    async def diff(self, name: str, old: str, new: str) -> Json:
        path = f"/admin/prompts/{_part(name)}/diff"
        return cast(Json, await self._call("GET", path, params={"from": old, "to": new}))

    async def promote(self, name: str, version: str, *, force: bool) -> Json:
        path = f"/admin/prompts/{_part(name)}/promote"
        body = {"version": version, "force": force}
        return cast(Json, await self._call("POST", path, body=body))

    async def rollback(self, name: str) -> Json:
        return cast(Json, await self._call("POST", f"/admin/prompts/{_part(name)}/rollback"))

    # ---- experiments -------------------------------------------------------------------------

    async def create_experiment(self, spec: ExperimentSpec) -> Json:
        body = {
            "id": spec.id,
            "prompt_name": spec.prompt_name,
            "control_version": spec.control_version,
            "treatment_version": spec.treatment_version,
            "traffic_split": spec.traffic_split,
            "start": spec.start.isoformat() if spec.start else None,
            "end": spec.end.isoformat() if spec.end else None,
            "metric": spec.metric,
        }
        return cast(Json, await self._call("POST", "/admin/experiments", body=body))

    async def experiments(self) -> list[Json]:
        return cast(list[Json], await self._call("GET", "/admin/experiments"))

    async def stop_experiment(self, experiment_id: str) -> Json:
        path = f"/admin/experiments/{_part(experiment_id)}/stop"
        return cast(Json, await self._call("POST", path))

    async def experiment_results(self, experiment_id: str) -> Json:
        path = f"/admin/experiments/{_part(experiment_id)}/results"
        return cast(Json, await self._call("GET", path))

    async def conclude_experiment(self, experiment_id: str, *, force: bool) -> Json:
        path = f"/admin/experiments/{_part(experiment_id)}/conclude"
        return cast(Json, await self._call("POST", path, body={"force": force}))

    # ---- adoption ----------------------------------------------------------------------------

    async def candidates(self) -> list[Json]:
        return cast(list[Json], await self._call("GET", "/admin/adoption/candidates"))

    async def adopt(self, candidate: str, name: str, variables: Mapping[str, str]) -> Json:
        body = {"candidate": candidate, "name": name, "variables": dict(variables)}
        return cast(Json, await self._call("POST", "/admin/adoption/adopt", body=body))

    # ---- audit -------------------------------------------------------------------------------

    async def audit(self, prompt: str | None, limit: int) -> list[Json]:
        entries = await self._call("GET", "/admin/audit", params={"prompt": prompt, "limit": limit})
        return list(reversed(entries))  # the API answers newest first; the store oldest first


def _part(value: str) -> str:
    """A name, version or id as one URL path segment."""
    return quote(value, safe="")


def _contents(file: PromptFile) -> bytes:
    """The prompt file as its author wrote it (`file.source` is its path), as JSON.

    Read again rather than rebuilt from the parsed file, so the server parses and checks exactly
    what the user has, with the same parser.
    """
    doc = read_yaml(Path(file.source))
    try:
        return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:
        raise InvalidPrompt(f"{file.source}: cannot be sent as JSON: {exc}.") from None
