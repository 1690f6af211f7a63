"""The console in a real browser: headless Chromium (Debian's package) against `gateway serve`.

Each test reads as a user story: sign in, click, see. Elements are found by role and label.
Screenshots of every page land in the test's output folder (docs/ gets its pictures from
docs/screenshots.py, on richer data). Without chromium the tests skip on a workstation and
fail in CI (`CI` set), so a CI machine that lost the browser cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_for_port

playwright_api = pytest.importorskip("playwright.sync_api")

TOKENS = {
    "admin": "admin-console-token-0123456789",
    "editor": "editor-console-token-0123456789",
    "viewer": "viewer-console-token-0123456789",
}
ADMIN_TOKENS = ",".join(f"{role}-person:{role}:{token}" for role, token in TOKENS.items())
BIN = Path(sys.executable).parent / "gateway"

EXPERIMENT_PROMPT = """\
name: console-exp
versions:
  - version: 1.0.0
    model: mock-model
    messages:
      - {role: system, content: "You help {{company}} customers."}
  - version: 1.1.0
    model: mock-model
    messages:
      - {role: system, content: "You help {{company}} customers, briefly."}
"""


def chromium() -> str:
    """Debian's chromium; in CI its absence fails the test instead of skipping it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "chromium is not installed (apt-get install chromium); the console tests need it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Console:
    """A `gateway serve` on a fresh project, and what it has logged so far."""

    url: str
    project: Path
    log: Path
    screenshots: list[Path] = field(default_factory=list)

    def mark(self) -> int:
        """Where the log ends now: `logged(since=...)` waits only for what comes after it."""
        return self.log.stat().st_size

    def logged(self, until: str = "", seconds: float = 5, since: int = 0) -> str:
        """What the server logged so far; with `until`, once that text is in what was logged
        after `since` (a `mark()`): the server's log lines reach the file from a logging
        thread, a moment after the answer, and a module's tests share one server, so a line an
        earlier test caused must not end the wait."""
        deadline = time.monotonic() + seconds
        text = self.log.read_text(errors="replace")
        while until not in text.encode()[since:].decode(errors="replace"):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
            text = self.log.read_text(errors="replace")
        return text


def cli(project: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN), *args], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The shipped example prompts pushed (support-agent 1.0.0 tested, 1.1.0 not), plus an
    experiment on `console-exp` with exposures and feedback, and an adoption candidate captured
    from unmanaged calls, served with the mock provider."""
    project = tmp_path_factory.mktemp("console")
    shutil.copytree(ROOT / "config", project / "config")
    (project / "config/prompts/console-exp.yaml").write_text(EXPERIMENT_PROMPT)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMPT_"))},
        "GATEWAY_UPSTREAM_URL": "mock",
        "GATEWAY_ADMIN_TOKENS": ADMIN_TOKENS,
        "GATEWAY_EXPERIMENTS_FLUSH_INTERVAL": "0.05",
        "GATEWAY_ADOPTION_CAPTURE": "true",
        "GATEWAY_CONFIG": str(project / "config/gateway.yaml"),
        "GATEWAY_ENV": "production",
        "PYTHONPATH": str(ROOT),  # this checkout's gateway, whatever the venv installed
    }
    cli(project, env, "prompts", "push", "config/prompts")
    cli(project, env, "prompts", "test", "support-agent", "--version", "1.0.0")
    cli(project, env, "prompts", "promote", "console-exp", "1.0.0", "--force")
    cli(
        project, env, "experiments", "create", "--id", "exp-console", "--prompt", "console-exp",
        "--control", "1.0.0", "--treatment", "1.1.0", "--split", "0.5",
    )  # fmt: skip
    with serve(project, env) as served:
        record_experiment(served.url)
        record_captures(served.url)
        yield served


@contextmanager
def serve(project: Path, env: dict[str, str]) -> Iterator[Console]:
    """`gateway serve` in `project` with `env` on a free port, its output in serve.log."""
    port = free_port()
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
        wait_for_port(port, 30)
        yield Console(f"http://127.0.0.1:{port}", project, log)
    finally:
        server.terminate()
        server.wait(20)


def record_experiment(url: str) -> None:
    """40 users call console-exp; each rates the answer (treatment users a little higher)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(40):
            answer = client.post(
                "/v1/chat/completions",
                headers={"x-user-id": f"user-{i}"},
                json={
                    "model": "mock-model",
                    "messages": [{"role": "user", "content": "hi"}],
                    "prompt": {"id": "console-exp", "variables": {"company": "Acme"}},
                },
            )
            assert answer.status_code == 200, answer.text
            variant = answer.headers["x-prompt-variant"]
            value = 4 + (i % 2) if variant == "treatment" else 3 + (i % 2)
            rid = answer.headers["x-request-id"]
            deadline = time.monotonic() + 10
            while True:  # the exposure is written in a batch shortly after the call
                sent = client.post(
                    "/v1/feedback",
                    json={"request_id": rid, "metric": "user_satisfaction", "value": value},
                )
                if sent.status_code == 202 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert sent.status_code == 202, sent.text


HARD_CODED = "You are the assistant of Acme. The customer is {name}, on the {plan} plan. Be brief."


def record_captures(url: str) -> None:
    """Three unmanaged calls whose system prompts differ in a name and a plan (one candidate
    with two variables), waited for until the candidate is listed (captures are written about
    once a second)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for name, plan in (("Ada", "Pro"), ("Bob", "Free"), ("Cy", "Team")):
            system = HARD_CODED.format(name=name, plan=plan)
            answer = client.post(
                "/v1/chat/completions",
                json={
                    "model": "mock-model",
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": "hi"},
                    ],
                },
            )
            assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 15
        listed: Any = None
        while time.monotonic() < deadline:
            listed = client.get(
                "/admin/adoption/candidates",
                headers={"authorization": f"Bearer {TOKENS['viewer']}"},
            )
            if listed.status_code == 200 and any(
                "{{var1}}" in c["template"] and "Acme" in c["template"] for c in listed.json()
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"no adoption candidate after 15 s: {listed and listed.text}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def visit(browser: Any, console: Console, tmp_path: Path) -> Iterator[Any]:
    """A fresh browser context: a page, with every URL it loads and every page's HTML kept."""
    context = browser.new_context(base_url=console.url)
    page = context.new_page()
    page.visited = []
    page.html = []
    page.csp_errors = []
    page.on("console", lambda m: page.csp_errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: page.visited.append(r.url))
    page.shots = tmp_path
    yield page
    context.close()


def sign_in(page: Any, role: str) -> None:
    page.goto("/ui/prompts")
    assert page.url.endswith("/ui/sign-in"), page.content()[:3000]
    page.get_by_label("Admin token").fill(TOKENS[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/prompts")


def shoot(page: Any, name: str) -> None:
    """Save a screenshot to the test's folder."""
    page.screenshot(path=str(page.shots / f"{name}.png"), full_page=True)


def accessible(page: Any) -> None:
    """One h1; every visible form control labelled; every button named; a chart has a table."""
    page.html.append(page.content())
    assert page.locator("h1").count() == 1
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden')
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map(e => e.name)"""
    )
    assert unlabelled == []
    nameless = page.evaluate(
        """() => [...document.querySelectorAll('button')].filter(b => !b.textContent.trim())
        .length"""
    )
    assert nameless == 0
    if page.locator("svg.chart").count():
        assert page.get_by_role("table").filter(has_text="95% interval").count() == 1


def production(page: Any, prompt: str) -> str:
    page.goto("/ui/prompts")
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name=prompt))
    return str(row.locator('td[data-env="production"]').inner_text()).strip()


def test_a_viewer_sees_no_promote_button_and_a_forged_promote_is_403(
    visit: Any, console: Console
) -> None:
    """A viewer reads every page but gets no action button; a promote POST made with the
    viewer's own session and CSRF token is refused with 403 and changes nothing."""
    sign_in(visit, "viewer")
    accessible(visit)
    shoot(visit, "viewer-prompts")
    visit.get_by_role("link", name="support-agent").click()
    assert visit.get_by_role("heading", name="Prompt support-agent").is_visible()
    assert visit.get_by_role("button", name=re.compile("Promote|Roll back|Run tests")).count() == 0
    accessible(visit)
    csrf = visit.locator('input[name="csrf"]').first.get_attribute("value")
    forged = visit.request.post(
        "/ui/prompts/support-agent/promote",
        form={"csrf": csrf, "version": "1.0.0"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "needs the editor role" in forged.text()
    assert production(visit, "support-agent").startswith("nothing")


def test_an_admin_promotes_a_tested_version_and_production_changes(
    visit: Any, console: Console
) -> None:
    """An admin promotes support-agent 1.0.0 (tested) from its page; the Prompts page's
    production column then shows 1.0.0; the untested 1.1.0 is refused with its pass rate."""
    sign_in(visit, "admin")
    before = production(visit, "support-agent")
    visit.goto("/ui/prompts/support-agent")
    shoot(visit, "prompt")
    visit.get_by_role("button", name="Promote 1.1.0", exact=True).click()
    assert visit.get_by_role("alert").is_visible()
    refusal = visit.get_by_role("alert").inner_text()
    assert "support-agent@1.1.0 has no test run" in refusal
    assert "90%" in refusal
    accessible(visit)
    visit.get_by_role("button", name="Promote 1.0.0", exact=True).click()
    assert visit.get_by_role("status").inner_text().startswith("Promoted 1.0.0")
    after = production(visit, "support-agent")
    assert (before.startswith("nothing"), after) == (True, "1.0.0")
    accessible(visit)
    shoot(visit, "prompts")


def test_an_editor_runs_tests_and_a_failing_version_shows_its_pass_rate(
    visit: Any, console: Console
) -> None:
    """An editor runs the tests of console-exp 1.1.0 (it has none in the files: the page says
    so), and a promotion of a version under the threshold names its pass rate."""
    sign_in(visit, "editor")
    visit.goto("/ui/prompts/support-agent?show=1.1.0")
    visit.get_by_role("button", name="Run tests of 1.1.0").click()
    assert visit.get_by_role("status").is_visible()
    assert "of 2 passed" in visit.get_by_role("region", name="Last test run of 1.1.0").inner_text()
    assert visit.get_by_role("button", name=re.compile("Force-promote")).count() == 0


def test_the_diff_of_two_versions_reads_side_by_side(visit: Any, console: Console) -> None:
    """Choosing 1.0.0 and 1.1.0 shows the old line on the left and the new one on the right."""
    sign_in(visit, "viewer")
    visit.goto("/ui/prompts/support-agent")
    visit.get_by_label("From", exact=True).select_option("1.0.0")
    visit.get_by_label("To", exact=True).select_option("1.1.0")
    visit.get_by_role("button", name="Compare").click()
    diff = visit.get_by_role("region", name=re.compile("Diff 1.0.0"))
    changed = diff.get_by_role("row").filter(has_text="temperature")
    assert "0.3" in changed.get_by_role("cell").nth(0).inner_text()
    assert "0.2" in changed.get_by_role("cell").nth(1).inner_text()
    assert diff.get_by_role("row").filter(has_text="Tools you may use").count() == 1
    visit.get_by_label("company", exact=True).fill("Initech")
    visit.get_by_role("button", name="Render").click()
    rendered = visit.get_by_role("region", name=re.compile("rendered")).inner_text()
    assert "support agent of Initech" in rendered
    accessible(visit)
    shoot(visit, "diff")


def test_an_experiment_shows_both_variants_in_its_chart_and_table(
    visit: Any, console: Console
) -> None:
    """The experiment with exposures and feedback charts control and treatment with their
    intervals, lists the same numbers in a table, and says what to do and why."""
    sign_in(visit, "admin")
    visit.get_by_role("link", name="Experiments").click()
    visit.get_by_role("link", name="exp-console").click()
    chart = visit.get_by_role("img", name=re.compile("Mean user_satisfaction"))
    assert chart.locator("text.label").all_text_contents() == ["control 1.0.0", "treatment 1.1.0"]
    assert chart.locator("g.control circle").count() == 1
    assert chart.locator("g.treatment circle").count() == 1
    table = visit.get_by_role("table").filter(has_text="95% interval")
    rows = {r.get_by_role("rowheader").inner_text() for r in table.get_by_role("row").all()[1:]}
    assert {"control", "treatment", "difference"} <= rows
    over_time = visit.get_by_role("img", name=re.compile("Difference in mean user_satisfaction"))
    assert over_time.count() == 1
    periods = visit.get_by_role("table").filter(has_text="Difference over time")
    assert len(periods.get_by_role("row").all()) >= 2  # a header and one hour at least
    assert visit.get_by_role("heading", name=re.compile("Recommendation: keep running")).count()
    assert (
        "fewer than" in visit.get_by_role("region", name=re.compile("Recommendation")).inner_text()
    )
    assert visit.get_by_role("button", name="Conclude exp-console").is_visible()
    accessible(visit)
    shoot(visit, "experiment")
    visit.get_by_role("link", name="Audit").click()
    visit.get_by_label("Prompt", exact=True).select_option("support-agent")
    visit.get_by_role("button", name="Filter").click()
    assert visit.get_by_role("cell", name=re.compile(r"^version\.test 1\.0\.0")).count() >= 1
    accessible(visit)
    shoot(visit, "audit")
    assert visit.csp_errors == []
    pages = "\n".join(visit.html)
    for token in TOKENS.values():
        assert token not in pages
        assert not any(token in url for url in visit.visited)


def test_an_editor_sees_no_conclude_button(visit: Any, console: Console) -> None:
    """Concluding needs admin: an editor gets Stop but no Conclude, and a forged conclude is
    403."""
    sign_in(visit, "editor")
    visit.goto("/ui/experiments/exp-console")
    assert visit.get_by_role("button", name=re.compile("Conclude")).count() == 0
    assert visit.get_by_role("button", name="Stop exp-console").is_visible()
    csrf = visit.locator('input[name="csrf"]').first.get_attribute("value")
    forged = visit.request.post(
        "/ui/experiments/exp-console/conclude", form={"csrf": csrf}, max_redirects=0
    )
    assert forged.status == 403


def test_a_viewer_sees_candidates_and_an_editor_adopts_one(visit: Any, console: Console) -> None:
    """A viewer sees the captured candidate (its template and example values) but no adopt form,
    and an adopt POST made with the viewer's own session and CSRF token is 403 and creates
    nothing; an editor names the prompt, renames the variables, adopts it, lands on the new
    prompt's page, and the Adoption page then lists the candidate as adopted."""
    sign_in(visit, "viewer")
    visit.get_by_role("link", name="Adoption").click()
    assert visit.get_by_role("heading", name="Adoption candidates", level=1).is_visible()
    candidate = visit.get_by_role("region", name=re.compile("^Candidate "))
    assert candidate.count() == 1
    assert "You are the assistant of Acme. The customer is {{var1}}" in candidate.inner_text()
    examples = candidate.get_by_role("table", name="Example values")
    assert examples.get_by_role("columnheader").all_inner_texts() == ["var1", "var2"]
    assert "adoptable" in candidate.inner_text()
    assert visit.get_by_role("button", name=re.compile("^Adopt")).count() == 0
    assert visit.get_by_role("textbox").count() == 0
    accessible(visit)
    shoot(visit, "viewer-adoption")
    found = candidate.get_by_role("heading", level=2).inner_text()
    candidate_id = found.removeprefix("Candidate ")
    csrf = visit.locator('input[name="csrf"]').first.get_attribute("value")
    forged = visit.request.post(
        "/ui/adoption/adopt",
        form={"csrf": csrf, "candidate": candidate_id, "name": "forged-adoption"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "needs the editor role" in forged.text()
    assert visit.request.get("/ui/prompts/forged-adoption").status == 404

    visit.get_by_role("button", name="Sign out").click()
    sign_in(visit, "editor")
    visit.get_by_role("link", name="Adoption").click()
    visit.get_by_label(f"Prompt name for {candidate_id}").fill("acme-support")
    visit.get_by_label("Rename var1", exact=True).fill("customer")
    visit.get_by_label("Rename var2", exact=True).fill("plan")
    accessible(visit)
    shoot(visit, "adoption")
    visit.get_by_role("button", name=f"Adopt {candidate_id}").click()
    visit.wait_for_url("**/ui/prompts/acme-support")
    assert visit.get_by_role("heading", name="Prompt acme-support", level=1).is_visible()
    assert visit.get_by_role("status").inner_text().startswith("Adopted as acme-support 1.0.0")
    assert visit.get_by_label("customer", exact=True).count() == 1  # the renamed variable
    accessible(visit)
    shoot(visit, "adopted")
    visit.get_by_role("link", name="Adoption").click()
    adopted = visit.get_by_role("region", name=f"Candidate {candidate_id}")
    assert adopted.get_by_role("link", name="acme-support").is_visible()
    assert visit.get_by_role("button", name=re.compile("^Adopt")).count() == 0
    accessible(visit)
    assert visit.csp_errors == []


# ---- security, over plain HTTP ------------------------------------------------------------------


def http_sign_in(client: httpx.Client, role: str) -> httpx.Response:
    form = client.get("/ui/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return client.post("/ui/sign-in", data={"csrf": csrf[1], "token": TOKENS[role]})


PAGES = [
    "/ui",
    "/ui/prompts",
    "/ui/prompts/support-agent",
    "/ui/experiments",
    "/ui/experiments/exp-console",
    "/ui/audit",
]


def test_nothing_answers_without_a_session_but_the_sign_in_page(console: Console) -> None:
    """Every page redirects to the sign-in page, every asset is 401, and a POST without a
    session is 401 and changes nothing."""
    with httpx.Client(base_url=console.url) as client:
        for path in PAGES:
            got = client.get(path)
            assert (got.status_code, got.headers.get("location")) == (302, "/ui/sign-in"), path
        assert client.get("/ui/static/other.css").status_code == 401
        assert client.get("/ui/static/console.css").status_code == 401
        signin = client.get("/ui/sign-in")
        assert signin.status_code == 200
        assert "script-src" not in signin.headers["content-security-policy"]
        assert signin.headers["content-security-policy"].startswith("default-src 'none'")
        refused = client.post("/ui/prompts/support-agent/rollback", data={"csrf": "x"})
        assert refused.status_code == 401


def test_the_session_cookie_is_http_only_strict_and_signed(console: Console) -> None:
    """The session cookie is HttpOnly and SameSite=Strict, holds no token, and a tampered one
    is not a session."""
    with httpx.Client(base_url=console.url) as client:
        signed_in = http_sign_in(client, "admin")
        assert signed_in.status_code == 303
        cookie = next(
            c for c in signed_in.headers.get_list("set-cookie") if c.startswith("gateway_console=")
        )
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/ui"} <= flags
        assert TOKENS["admin"] not in cookie
        assert client.get("/ui/prompts").status_code == 200
        value = client.cookies["gateway_console"]
        client.cookies.set("gateway_console", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
        assert client.get("/ui/prompts").status_code == 302


def test_a_post_without_the_csrf_token_is_refused(console: Console) -> None:
    """An admin's session with a wrong or missing CSRF token gets 403, and nothing changes."""
    with httpx.Client(base_url=console.url) as client:
        http_sign_in(client, "admin")
        for data in ({"csrf": "wrong", "version": "1.1.0", "force": "yes"}, {"version": "1.1.0"}):
            refused = client.post("/ui/prompts/support-agent/promote", data=data)
            assert refused.status_code == 403
            assert "CSRF" in refused.text
        audit = client.get("/ui/audit?prompt=support-agent").text
        assert "promote 1.1.0" not in audit


def test_a_wrong_token_does_not_sign_in_and_no_token_is_logged(console: Console) -> None:
    """A wrong token gets the sign-in page again with 401; no token appears in the log."""
    start = console.mark()
    with httpx.Client(base_url=console.url) as client:
        form = client.get("/ui/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        wrong = client.post(
            "/ui/sign-in", data={"csrf": csrf[1], "token": "not-a-token-0123456789"}
        )
        assert wrong.status_code == 401
        assert "not-a-token" not in wrong.text
        assert "gateway_console=" not in wrong.headers.get("set-cookie", "")
        assert http_sign_in(client, "admin").status_code == 303
    logged = console.logged(until="console sign-in by admin-person (admin)", since=start)
    assert "console sign-in by admin-person (admin)" in logged
    for token in (*TOKENS.values(), "not-a-token-0123456789"):
        assert token not in logged
