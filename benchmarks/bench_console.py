"""The console's pages at scale: 200 prompts of 20 versions, an experiment of 1,000,000 exposures.

Run: python benchmarks/bench_console.py   (--exposures to shrink; the fill takes a few minutes)

A fresh SQLite store in a temporary directory gets 200 prompts with 20 versions each (every
version tested, one active per prompt), an experiment on `prompt-000` and the exposures and
feedback of `bench_results.py` (100,000 users, about 10 calls each), their times spread over
about 6 days (so the difference over time has 140 hours, shown as 6 days). The app is
`create_app` with that store, called in-process through Litestar's test client (no network),
signed in as an admin. Once the app's start-up import of scipy and compiling of the templates
are done (their time is printed), each page is fetched once cold, then timed as the median and
worst of 10 fetches. The Experiment page reuses its results for 5 seconds (RESULTS_TTL); its cold
figure is the one that computes them (the store reads printed below time that computation
alone: `experiment_results`, the use case that `gateway experiments results` and the API call
too); a last row fetches it once more after RESULTS_TTL, when it shows the results it has while a
task computes them again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench_results import EXPERIMENT, T0, fill, make_batches
from litestar.testing import TestClient

from gateway.api.app import create_app
from gateway.api.console import RESULTS_TTL
from gateway.core.model import PromptDraft, TestResults
from gateway.core.rendering import Message
from gateway.experiments import experiment_results
from gateway.files import ExperimentSpec
from gateway.prompts import PromptRegistry
from gateway.settings import ExperimentSettings, load
from gateway.stores.sqlite import SQLiteStore

TOKEN = "bench-admin-token-0123456789"
SPREAD = 500
"""bench_results.py's calls come 1 ms apart; here 0.5 s apart, 1,000,000 over 5.8 days."""


async def populate(path: Path, prompts: int, versions: int, exposures: int) -> None:
    store = SQLiteStore(path)
    registry = PromptRegistry(store, threshold=0.9)
    passed = TestResults(total=4, passed=4, failed=0, pass_rate=1.0)
    for p in range(prompts):
        name = f"prompt-{p:03d}"
        for v in range(versions):
            draft = PromptDraft(
                name=name,
                version=f"1.{v}.0",
                messages=(Message("system", f"You are assistant {p}, revision {v}. {{{{tone}}}}"),),
                variables=("tone",),
                model="mock-model",
                temperature=0.2,
            )
            await registry.create_version(draft, actor="bench")
            await registry.record_test_run(name, draft.version, passed, actor="bench")
        await registry.promote(name, f"1.{versions - 1}.0", actor="bench")
    spec = ExperimentSpec(
        id=EXPERIMENT.id,
        prompt_name="prompt-000",
        control_version="1.0.0",
        treatment_version="1.1.0",
        traffic_split=0.5,
        start=EXPERIMENT.start,
        end=None,
        metric="user_satisfaction",
    )
    await registry.create_experiment(spec, actor="bench")
    batches = [
        ([c._replace(at=T0 + (c.at - T0) * SPREAD) for c in calls], feedback)
        for calls, feedback in make_batches(exposures, 100_000, 5000)
    ]
    seconds, written, applied, _ = await fill(store, batches)
    print(f"filled: {written:,} exposures, {applied:,} feedback values in {seconds:.0f} s")
    await store.close()


async def store_reads(path: Path) -> None:
    """What the Experiment page's cold view reads, timed apart (median of 5)."""
    store = SQLiteStore(path)
    for name, read in (
        ("store.arm_totals", lambda: store.arm_totals(EXPERIMENT.id, "user_satisfaction")),
        (
            "experiment_results (store.arm_totals and the statistics)",
            lambda: experiment_results(store, EXPERIMENT.id, ExperimentSettings()),
        ),
        ("store.period_totals", lambda: store.period_totals(EXPERIMENT.id, "user_satisfaction")),
        ("store.last_changes", store.last_changes),
        ("store.snapshot (whole store)", store.snapshot),
    ):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            await read()
            times.append((time.perf_counter() - start) * 1000)
        print(f"{name}: {statistics.median(times):.1f} ms (median of 5)")
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--exposures", type=int, default=1_000_000)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        asyncio.run(populate(path, args.prompts, args.versions, args.exposures))
        (Path(folder) / "none.yaml").write_text("")
        settings = load(
            None,
            {
                "GATEWAY_CONFIG": str(Path(folder) / "none.yaml"),
                "GATEWAY_STORE_URL": f"sqlite:///{path}",
                "GATEWAY_UPSTREAM_URL": "mock",
                "GATEWAY_ADMIN_TOKENS": f"bench:admin:{TOKEN}",
                "GATEWAY_SNAPSHOT_PATH": str(Path(folder) / "snapshot.json"),
            },
        )
        app = create_app(settings, store=SQLiteStore(path))
        with TestClient(app, base_url="http://127.0.0.1") as client:
            # The app imports scipy and compiles the console's templates in a thread at start
            # (1-2 s here); a page that needs them first would wait for that. Timed apart: the
            # pages are timed once it is done. (A module is in sys.modules from the start of its
            # import: wait for the thread.)
            start = time.perf_counter()
            for thread in threading.enumerate():
                if thread.name == "warm-up":
                    thread.join(30)
            print(
                "scipy imported and templates compiled "
                f"{time.perf_counter() - start:.2f} s after the app started"
            )
            form = client.get("/ui/sign-in").text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form)
            assert csrf is not None
            signed = client.post("/ui/sign-in", data={"csrf": csrf[1], "token": TOKEN})
            assert signed.status_code in (200, 303), signed.text
            pages = [
                "/ui/prompts",
                "/ui/prompts/prompt-000",
                f"/ui/prompts/prompt-000?from=1.0.0&to=1.{args.versions - 1}.0",
                f"/ui/experiments/{EXPERIMENT.id}",
                "/ui/experiments",
                "/ui/audit",
                "/ui/audit?prompt=prompt-000",
                "/ui/adoption",
            ]
            print("| page | cold ms | median ms | worst ms | bytes |")
            print("| --- | ---: | ---: | ---: | ---: |")
            for page in pages:
                start = time.perf_counter()
                first = client.get(page)
                cold = (time.perf_counter() - start) * 1000
                assert first.status_code == 200, (page, first.status_code, first.text[:300])
                times = []
                for _ in range(10):
                    start = time.perf_counter()
                    client.get(page)
                    times.append((time.perf_counter() - start) * 1000)
                print(
                    f"| `{page}` | {cold:.1f} | {statistics.median(times):.1f} | "
                    f"{max(times):.1f} | {len(first.content):,} |"
                )
            asyncio.run(store_reads(path))
            time.sleep(RESULTS_TTL + 0.5)
            page = f"/ui/experiments/{EXPERIMENT.id}"
            start = time.perf_counter()
            again = client.get(page)
            stale = (time.perf_counter() - start) * 1000
            assert "computed" in again.text
            print(f"| `{page}` after {RESULTS_TTL:.0f} s | {stale:.1f} | | | |")


if __name__ == "__main__":
    main()
