"""The console's security faults a tester found, each as a kind, over real HTTP against a real
`gateway serve` (and headless Chromium for the sign-in page's style): sign-out ends the session
at once, every /ui answer (errors too) carries the security headers, no asset answers without a
session, Litestar's own errors under /ui are console pages, and what each action came to is
logged."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.ui.test_console import ADMIN_TOKENS, TOKENS, Console, browser, cli, serve

__all__ = ["browser"]  # the Chromium fixture, shared with the browser tests

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The shipped example prompts pushed (support-agent 1.0.0 tested, 1.1.0 not), served with
    the mock provider and the three role tokens."""
    project = tmp_path_factory.mktemp("console-security")
    shutil.copytree(ROOT / "config", project / "config")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMPT_"))},
        "GATEWAY_UPSTREAM_URL": "mock",
        "GATEWAY_ADMIN_TOKENS": ADMIN_TOKENS,
        "GATEWAY_CONFIG": str(project / "config/gateway.yaml"),
        "GATEWAY_ENV": "production",
        "PYTHONPATH": str(ROOT),
    }
    cli(project, env, "prompts", "push", "config/prompts")
    cli(project, env, "prompts", "test", "support-agent", "--version", "1.0.0")
    with serve(project, env) as console:
        yield console


def signed_in(client: httpx.Client, role: str) -> str:
    """Sign `client` in with `role`'s token; the CSRF token of its session."""
    form = client.get("/ui/sign-in")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert nonce is not None
    done = client.post("/ui/sign-in", data={"csrf": nonce[1], "token": TOKENS[role]})
    assert done.status_code == 303, done.text
    page = client.get("/ui/prompts")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf[1]


def secured(answer: httpx.Response) -> None:
    """The console's headers, with a policy that allows no script and no inline style but the
    one hashed stylesheet."""
    for name, value in HEADERS.items():
        assert answer.headers.get_list(name) == [value], (answer.url, name, answer.headers)
    (csp,) = answer.headers.get_list("content-security-policy")
    assert csp.startswith("default-src 'none'"), csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert re.search(r"style-src 'self' 'sha256-[A-Za-z0-9+/]+=*';", csp), csp


def console_page(answer: httpx.Response, status: int, says: str, *, link: bool = True) -> None:
    """An HTML console page with `status`, the headers, what happened, and a link back (the
    sign-in page's refusals are that page again, with its form)."""
    assert answer.status_code == status, (answer.url, answer.status_code, answer.text[:500])
    assert answer.headers["content-type"].startswith("text/html"), answer.headers
    secured(answer)
    assert says in answer.text, answer.text
    if link:
        assert re.search(r'<a href="/ui/(prompts|sign-in)">', answer.text), answer.text


# ---- 1. sign-out ends the session ---------------------------------------------------------------


def test_a_copied_cookie_is_refused_once_its_session_signed_out(served: Console) -> None:
    """The cookie value of a session that signed out no longer opens a page (sign-in) nor
    passes an action (401), even with the session's own CSRF token; signing in again makes a
    new session and does not revive the old one."""
    start = served.mark()
    with httpx.Client(base_url=served.url) as browser_a, httpx.Client(base_url=served.url) as copy:
        csrf = signed_in(browser_a, "admin")
        stolen = browser_a.cookies["gateway_console"]
        copy.cookies.set("gateway_console", stolen, path="/ui")
        assert copy.get("/ui/prompts").status_code == 200  # a copy works while signed in
        out = browser_a.post("/ui/sign-out", data={"csrf": csrf})
        assert (out.status_code, out.headers["location"]) == (303, "/ui/sign-in")
        for path in ("/ui/prompts", "/ui/audit", "/ui/prompts/support-agent"):
            page = copy.get(path)
            assert (page.status_code, page.headers.get("location")) == (302, "/ui/sign-in")
        forged = copy.post(
            "/ui/prompts/support-agent/rollback", data={"csrf": csrf}, follow_redirects=False
        )
        console_page(forged, 401, "needs a console session")
        assert copy.post("/ui/sign-out", data={"csrf": csrf}).status_code == 401
        assert copy.get("/ui/static/console.css").status_code == 401

        signed_in(browser_a, "admin")  # the same browser signs in again: a new session
        assert browser_a.cookies["gateway_console"] != stolen
        assert browser_a.get("/ui/prompts").status_code == 200
        assert copy.get("/ui/prompts").status_code == 302  # the old one stays revoked
        # A sign-in form opened with the revoked cookie shows the form, not the pages.
        assert copy.get("/ui/sign-in").status_code == 200
    assert "console sign-out by admin-person" in served.logged(
        until="console sign-out", since=start
    )
    assert (
        "console POST /ui/prompts/support-agent/rollback from 127.0.0.1: refused (no session, 401)"
        in served.logged(until="refused (no session, 401)", since=start)
    )


# ---- 2 and 5. every answer under /ui carries the headers; errors are console pages -------------


def test_every_console_answer_and_error_carries_the_security_headers(served: Console) -> None:
    """Pages, redirects, assets and every kind of error under /ui: from a handler (404 of a
    prompt, 409 refusal), a guard (401, 403 role, 403 CSRF), routing (404 unknown path, 405
    wrong method), the body limit (413), and the sign-in form's own refusals."""
    with httpx.Client(base_url=served.url) as anonymous:
        secured(anonymous.get("/ui/prompts"))  # 302
        secured(anonymous.get("/ui/sign-in"))
        secured(anonymous.get("/ui/no-such-page"))  # 302 to sign-in: no page without a session
        console_page(anonymous.post("/ui/prompts/x/rollback", data={"csrf": "x"}), 401, "session")
        console_page(anonymous.get("/ui/static/console.css"), 401, "session")
        expired = anonymous.post("/ui/sign-in", data={"csrf": "x"})
        console_page(expired, 403, "The form expired", link=False)
        console_page(anonymous.put("/ui/sign-in"), 405, "PUT is not allowed on /ui/sign-in")
        console_page(
            anonymous.post("/ui/sign-in", data={"token": "x" * 70_000}), 413, "larger than"
        )

    with httpx.Client(base_url=served.url) as viewer:
        csrf = signed_in(viewer, "viewer")
        console_page(viewer.get("/ui/no-such-page"), 404, "There is no console page at")
        console_page(viewer.get("/ui/prompts/no-such-prompt"), 404, "no-such-prompt")
        console_page(viewer.get("/ui/static/nothing.css"), 404, "No console asset")
        console_page(viewer.get("/ui/sign-out"), 405, "GET is not allowed on /ui/sign-out")
        console_page(viewer.get("/ui/prompts/support-agent/promote"), 405, "not a page")
        console_page(
            viewer.post("/ui/prompts/support-agent/promote", data={"csrf": csrf}),
            403,
            "needs the editor role",
        )
        console_page(viewer.post("/ui/sign-out", data={"csrf": "wrong"}), 403, "CSRF")
        big = viewer.post(
            "/ui/prompts/support-agent/promote", data={"csrf": csrf, "pad": "x" * 70_000}
        )
        console_page(big, 413, "larger than the console accepts (64 KiB)")
        secured(viewer.get("/ui/prompts"))
        secured(viewer.get("/ui"))  # 302 to the Prompts page

    with httpx.Client(base_url=served.url) as admin:
        csrf = signed_in(admin, "admin")
        refused = admin.post(
            "/ui/prompts/support-agent/promote", data={"csrf": csrf, "version": "1.1.0"}
        )
        console_page(refused, 409, "has no test run")


def test_the_admin_api_and_the_proxy_still_answer_json(served: Console) -> None:
    """Only /ui answers HTML errors: /admin and other paths keep OpenAI's JSON shape and get
    no console headers."""
    with httpx.Client(base_url=served.url) as client:
        for answer, status in (
            (client.get("/admin/nothing-here"), 404),
            (client.get("/uix"), 404),
            (client.get("/admin/prompts/x/promote"), 405),
        ):
            assert answer.status_code == status
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"]["code"] in ("not_found", "method_not_allowed")
            assert "content-security-policy" not in answer.headers


# ---- 3 and 4. assets need a session; the sign-in page is styled within the policy --------------


def test_no_asset_answers_without_a_session_and_css_says_its_charset_once(
    served: Console,
) -> None:
    """Every asset is 401 without a session (the sign-in page's stylesheet too); signed in, the
    stylesheet is `text/css; charset=utf-8`, the charset said once."""
    files = sorted(p.name for p in (ROOT / "gateway/ui/static").iterdir())
    assert "console.css" in files
    with httpx.Client(base_url=served.url) as client:
        for name in (*files, "other.css"):
            assert client.get(f"/ui/static/{name}").status_code == 401, name
        signed_in(client, "viewer")
        css = client.get("/ui/static/console.css")
        assert css.status_code == 200
        assert css.headers.get_list("content-type") == ["text/css; charset=utf-8"]
        secured(css)


def test_the_sign_in_page_is_styled_with_no_policy_violation(browser: Any, served: Console) -> None:
    """In Chromium the sign-in page (and its refusal) loads no asset, breaks no rule of the
    Content-Security-Policy, and is styled (its inline stylesheet is allowed by its hash)."""
    context = browser.new_context(base_url=served.url)
    page = context.new_page()
    errors: list[str] = []
    loaded: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: loaded.append(r.url))
    try:
        page.goto("/ui/sign-in")
        button = page.get_by_role("button", name="Sign in")
        colour = button.evaluate("b => getComputedStyle(b).backgroundColor")
        assert colour == "rgb(11, 92, 173)"
        page.get_by_label("Admin token").fill("not-a-token-0123456789")
        button.click()
        assert "not valid" in page.get_by_role("alert").inner_text()
        assert page.get_by_role("button", name="Sign in").evaluate(
            "b => getComputedStyle(b).backgroundColor"
        ) == ("rgb(11, 92, 173)")
        # Chromium also reports the 401 page itself and its /favicon.ico as failed loads.
        violations = [e for e in errors if not e.startswith("Failed to load resource")]
        assert violations == [], errors
        assert len(errors) <= 2, errors
        assert not any("/ui/static/" in url for url in loaded), loaded
    finally:
        context.close()


# ---- 6. every console action logs its outcome; sign-ins are logged ------------------------------


def test_actions_log_their_outcome_and_sign_ins_their_client(served: Console) -> None:
    """A refused promotion is logged as refused with its code, a done one as done, a viewer's
    forged action as refused; failed sign-ins name the client address and no part of the
    token."""
    wrong = "wrong-token-abcdefghijklmnop"
    start = served.mark()
    with httpx.Client(base_url=served.url) as client:
        form = client.get("/ui/sign-in")
        nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert nonce is not None
        assert client.post("/ui/sign-in", data={"csrf": nonce[1], "token": wrong}).status_code == (
            401
        )
        csrf = signed_in(client, "admin")
        client.post("/ui/prompts/support-agent/promote", data={"csrf": csrf, "version": "1.1.0"})
        client.post("/ui/prompts/support-agent/promote", data={"csrf": csrf, "version": "1.0.0"})
        client.post("/ui/prompts/no-such-prompt/rollback", data={"csrf": csrf})
        client.post("/ui/sign-out", data={"csrf": csrf})
    with httpx.Client(base_url=served.url) as viewer:
        csrf = signed_in(viewer, "viewer")
        viewer.post("/ui/prompts/support-agent/rollback", data={"csrf": csrf})
    # The viewer's refusal is the last line these actions log (one logging thread, in order).
    logged = served.logged(
        until="rollback by viewer-person: refused (insufficient_role", since=start
    )
    lines = [line for line in logged.splitlines() if "console " in line]
    text = "\n".join(lines)
    refusal = "promote support-agent@1.1.0 by admin-person: refused (promotion_refused, 409)"
    assert refusal in text, text
    assert "console promote support-agent@1.1.0 by admin-person: done" not in text
    assert "console promote support-agent@1.0.0 by admin-person: done" in text
    assert "console rollback no-such-prompt by admin-person: refused (prompt_not_found, 404)" in (
        text
    )
    assert re.search(r"console POST /ui/prompts/support-agent/rollback by viewer-person: "
                     r"refused \(insufficient_role, 403\)", text), text  # fmt: skip
    assert "console sign-in refused from 127.0.0.1: not a configured admin token" in text
    assert "console sign-in by admin-person (admin) from 127.0.0.1" in text
    assert "console sign-out by admin-person" in text
    for token in (*TOKENS.values(), wrong):
        for part in (token, token[:8], token[-8:]):
            assert part not in logged
