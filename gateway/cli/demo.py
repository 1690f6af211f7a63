"""`gateway demo`: a gateway to try at once, with no API key and nothing to set up (PRODUCT §12).

It makes a temporary SQLite store, pushes the example prompts, runs their tests on the built-in
mock provider, promotes what passed, starts an experiment on `support-agent`, prints what to try,
and then serves (as `gateway serve` does) with the mock provider and an admin token for the
console and the admin API. Nothing outside the temporary folder is written.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.backend import Json
from gateway.cli.runtime import err, failures, out
from gateway.cli.serve import check_free, serve
from gateway.core.promptfile import PromptFile
from gateway.core.versions import parse_version
from gateway.errors import ConfigError
from gateway.files import ExperimentSpec, load_prompt_files
from gateway.settings import load

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "prompts"
"""The example prompts of the repository (a clone or an editable install has them)."""
EXPERIMENT = ExperimentSpec(
    "demo-ab", "support-agent", "1.0.0", "1.1.0", 0.5, metric="task_completion"
)


class _Quiet:
    """Test-run progress the demo does not draw."""

    def start(self, label: str, total: int | None) -> None:
        return None

    def advance(self) -> None:
        return None


def demo(
    host: Annotated[str, typer.Option("--host", help="Interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8080,
) -> None:
    """Serve a ready demo: the mock provider, example prompts tested and promoted, an experiment."""
    with failures():
        # Before anything is built or printed: a taken port is the likeliest failure.
        check_free(host, port)
        if not EXAMPLES.is_dir():
            raise ConfigError(
                f"The example prompts are not at {EXAMPLES}; run the demo from a clone of the "
                "repository (pip install -e .)."
            )
    folder = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    try:
        _start(folder, host, port)
    except BaseException:
        # Kept only once the gateway serves it (serve replaces this process and never returns).
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _start(folder: Path, host: str, port: int) -> None:
    """Fill the store in `folder`, print what to try, and serve (this process becomes the
    server); raises (typer.Exit after a one-line reason) when any step fails."""
    token = "demo-" + secrets.token_urlsafe(18)
    environ = {
        "GATEWAY_STORE_URL": f"sqlite:///{folder / 'gateway.db'}",
        "GATEWAY_UPSTREAM_URL": "mock",
        "GATEWAY_ENV": "production",
        "GATEWAY_ADMIN_TOKENS": f"demo:admin:{token}",
        "GATEWAY_CONFIG": str(folder / "gateway.yaml"),
    }
    (folder / "gateway.yaml").write_text("# gateway demo: settings come from the environment\n")
    with failures():
        os.environ.update(environ)
        report = asyncio.run(_prepare(load_prompt_files([EXAMPLES])))
    url = f"http://{host}:{port}"
    err.print(f"demo store: {folder} (kept after the demo; remove it when done)", markup=False)
    for line in report:
        err.print(line, markup=False)
    out.print(_what_to_try(url, token), markup=False)
    serve(host=host, port=port, workers=1, as_json=False)


async def _prepare(files: list[PromptFile]) -> list[str]:
    """Push, test on the mock, promote each prompt's newest version (forced only for the judge,
    which has no tests), start the experiment; lines to print."""
    from gateway.cli.local import LocalBackend

    backend = await LocalBackend.open(load(None, os.environ), actor="demo")
    lines: list[str] = []
    try:
        await backend.push(files)
        for file in files:
            if not file.tests:
                continue
            for draft in file.drafts:
                run: Json = await backend.test(
                    file.name, draft.version, file, concurrency=8, progress=_Quiet()
                )
                lines.append(
                    f"tested {file.name}@{draft.version}: {run['passed']}/{run['total']} passed"
                )
        for file in files:
            version = max(file.drafts, key=lambda d: parse_version(d.version)).version
            await backend.promote(file.name, version, force=not file.tests)
            forced = " (forced: it has no tests)" if not file.tests else ""
            lines.append(f"promoted {file.name}@{version} to production{forced}")
        await backend.create_experiment(EXPERIMENT)
        lines.append(
            "experiment demo-ab running: support-agent 1.0.0 vs 1.1.0, half the users each"
        )
    finally:
        await backend.close()
    return lines


def _what_to_try(url: str, token: str) -> str:
    """The banner: the console's address and the admin token to sign in with, then calls to
    try with curl, the SDK and the CLI."""
    return f"""
Prompt Gateway demo on {url}/v1 (mock provider, no API key needed).

Web console: open {url}/ui and sign in with the admin token {token}
(role admin: promote, roll back, run tests, conclude the experiment demo-ab).

Try:

  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\
    -H 'X-User-Id: alice' -d '{{"model": "gpt-4o-mini",
      "messages": [{{"role": "user", "content": "Where is my order?"}}],
      "prompt": {{"id": "support-agent",
                 "variables": {{"company": "Acme", "timezone": "UTC", "tools": "search"}}}}}}' -D -

  python -c 'from openai import OpenAI
c = OpenAI(base_url="{url}/v1", api_key="unused")
r = c.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hi"}}],
    extra_body={{"prompt": {{"id": "support-agent", "variables":
        {{"company": "Acme", "timezone": "UTC", "tools": "search"}}}}}})
print(r.choices[0].message.content)'

  GATEWAY_URL={url} GATEWAY_ADMIN_TOKEN={token} gateway experiments results demo-ab
  curl -s {url}/admin/prompts -H 'Authorization: Bearer {token}'
  curl -s {url}/metrics | grep gateway_requests_total
"""
