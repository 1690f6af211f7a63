"""The console's screenshots in docs/, taken from a real `gateway serve` in a real browser.

Run from the repository's root: python docs/screenshots.py   (about a minute)

Needs what the browser tests need: Debian's chromium (`apt-get install chromium`) and
Playwright's Python package (the dev extras); no network. A temporary project gets the shipped
example prompts (`config/prompts`; support-agent 1.0.0 tested and active, 1.1.0 not tested), an
experiment `tone-test` on support-agent with 5 days of calls and ratings from 2,000 users, and
three hard-coded system prompts captured from unmanaged calls. The calls and captures are written
into the project's SQLite store as a gateway records them (`record_outcomes`,
`record_captures`), with times in the past, so that the difference over time has days to show.
Then `gateway serve` runs on the project with the mock provider, headless Chromium signs in as an
admin and writes, into docs/:

    console-prompts.png     the Prompts page
    console-prompt.png      support-agent's page with the diff of 1.0.0 and 1.1.0
    console-experiment.png  the Experiment page of tone-test
    console-adoption.png    the Adoption page
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import sync_playwright

from gateway.core.capture import CallShape, sighting
from gateway.core.experiments import in_treatment
from gateway.core.outcomes import Exposure, ExposureRow, Feedback, exposure_row
from gateway.stores.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent / "gateway"
"""The `gateway` command of the Python that runs this script (its virtual environment's)."""
TOKEN = "screenshots-admin-token-0123456789"
EXPERIMENT = "tone-test"
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=5)
USERS = 2_000
CALLS = 12_000
HARD_CODED = "You are the assistant of Acme. The customer is {name}, on the {plan} plan. Be brief."


def gateway(project: Path, env: dict[str, str], *args: str) -> None:
    """Run `gateway ARGS...` in the project; stop with its output when it fails."""
    done = subprocess.run(
        [str(BIN), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        sys.exit(f"gateway {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


async def record(store_path: Path) -> None:
    """The experiment's calls and ratings (treatment rated about 0.3 higher) and the captures."""
    store = SQLiteStore(store_path)
    rng = random.Random(2026)
    keys = [f"user-{i}" for i in range(USERS)]
    units = [hashlib.sha256(k.encode()).hexdigest()[:32] for k in keys]
    calls: list[ExposureRow] = []
    ratings: list[Feedback] = []
    for n in range(CALLS):
        user = rng.randrange(USERS)
        treated = in_treatment(keys[user], EXPERIMENT, 0.5)
        request_id = f"req_{rng.getrandbits(96):024x}"
        at = START + timedelta(seconds=n * 5 * 86_400 / CALLS)
        calls.append(
            exposure_row(
                Exposure(
                    request_id,
                    EXPERIMENT,
                    "treatment" if treated else "control",
                    "1.1.0" if treated else "1.0.0",
                    units[user],
                    at,
                    rng.gammavariate(4, 180),
                    rng.randint(200, 400),
                    rng.randint(50, 200),
                    0.0004,
                    200,
                )
            )
        )
        if rng.random() < 0.3:
            rating = rng.gauss(3.7 if treated else 3.4, 1.0)
            ratings.append(Feedback(request_id, "user_satisfaction", min(5.0, max(0.0, rating))))
    for at in range(0, CALLS, 2_000):
        await store.record_outcomes(calls[at : at + 2_000], [])
    await store.record_outcomes([], ratings)  # as apps send them: after their calls
    shape = CallShape("mock-model", 0.2, None)
    seen = datetime.now(UTC) - timedelta(hours=1)
    batch = [
        sighting("system", HARD_CODED.format(name=name, plan=plan), shape, seen, count)
        for name, plan, count in (("Ada", "Pro", 41), ("Bob", "Free", 17), ("Cy", "Team", 9))
    ]
    await store.record_captures(batch, limit=1000)
    await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"gateway serve did not answer at {url} within {seconds:.0f} s")


def shoot(url: str, chromium: str) -> None:
    """Sign in as admin and save the four pages."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(base_url=url, viewport={"width": 1280, "height": 900})
        page.goto("/ui/sign-in")
        page.get_by_label("Admin token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/prompts")
        for path, name in (
            ("/ui/prompts", "prompts"),
            ("/ui/prompts/support-agent?from=1.0.0&to=1.1.0", "prompt"),
            (f"/ui/experiments/{EXPERIMENT}", "experiment"),
            ("/ui/adoption", "adoption"),
        ):
            page.goto(path)
            target = DOCS / f"console-{name}.png"
            page.screenshot(path=str(target), full_page=True)
            print(f"{target.relative_to(ROOT)}: {path}")
        browser.close()


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        shutil.copytree(ROOT / "config", project / "config")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMPT_"))},
            "GATEWAY_UPSTREAM_URL": "mock",
            "GATEWAY_ADMIN_TOKENS": f"dana:admin:{TOKEN}",
            "LOGNAME": "dana",  # who the command line's changes are by, in the audit log
            "USER": "dana",
            "GATEWAY_CONFIG": str(project / "config/gateway.yaml"),
            "GATEWAY_ENV": "production",
            "GATEWAY_ADOPTION_CAPTURE": "true",
            "PYTHONPATH": str(ROOT),  # this checkout's gateway
        }
        gateway(project, env, "prompts", "push", "config/prompts")
        gateway(project, env, "prompts", "test", "support-agent", "--version", "1.0.0")
        gateway(project, env, "prompts", "promote", "support-agent", "1.0.0")
        gateway(
            project, env, "experiments", "create", "--id", EXPERIMENT, "--prompt",
            "support-agent", "--control", "1.0.0", "--treatment", "1.1.0", "--split", "0.5",
            "--start", START.isoformat(),
        )  # fmt: skip
        asyncio.run(record(project / "gateway.db"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = project / "serve.log"
        with log.open("w") as out:
            server = subprocess.Popen(
                [str(BIN), "serve", "--port", str(port)],
                cwd=project,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(url, port, 30)
            shoot(url, chromium)
        finally:
            server.terminate()
            server.wait(20)


if __name__ == "__main__":
    main()
