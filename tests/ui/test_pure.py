"""The console's pure parts, without a browser: session signing, charts, page shapes, the trend."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from xml.etree import ElementTree

import pytest

from gateway.core.diffing import DiffRow, side_by_side
from gateway.core.model import AuditEntry, PromptState
from gateway.core.outcomes import PeriodTotal
from gateway.core.resolution import Overrides
from gateway.core.trend import HOURLY_UP_TO, Z95, difference_over_time
from gateway.settings import AdminToken
from gateway.ui import views
from gateway.ui.charts import Bar, Point, interval_chart, series_chart
from gateway.ui.session import Revocations, SessionSigner, csrf_ok
from tests.factories import T0, experiment, snapshot, version

SVG = ""
"""Element names: the charts are inline SVG in HTML, which needs no namespace."""


def token(name: str = "ada", role: str = "admin", secret: str = "s3cret-token") -> AdminToken:
    return AdminToken(name, role, hashlib.sha256(secret.encode()).digest())  # type: ignore[arg-type]


# ---- session ------------------------------------------------------------------------------------


def test_a_session_round_trips_and_names_its_token() -> None:
    signer = SessionSigner(b"k" * 32, max_age=3600)
    session, cookie = signer.open(token(), now=1000)
    assert session.expires == 4600
    assert "s3cret-token" not in cookie
    assert signer.read(cookie, now=1001) == session
    assert signer.owner(session, [token("bob", "viewer", "other"), token()]) == token()
    assert signer.owner(session, [token("bob", "viewer", "other")]) is None


def test_a_tampered_or_foreign_cookie_reads_as_no_session() -> None:
    signer = SessionSigner(b"k" * 32, max_age=3600)
    _, cookie = signer.open(token(), now=1000)
    body, mac = cookie.split(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    for forged in (f"{flipped}.{mac}", f"{body}.{mac[:-1]}x", body, "", None, "a.b.c", "%%.%%"):
        assert signer.read(forged, now=1001) is None, forged
    other = SessionSigner(b"j" * 32, max_age=3600)
    assert other.read(cookie, now=1001) is None


def test_a_session_expires_after_its_max_age() -> None:
    signer = SessionSigner(b"k" * 32, max_age=60)
    _, cookie = signer.open(token(), now=1000)
    assert signer.read(cookie, now=1059) is not None
    assert signer.read(cookie, now=1060) is None


def test_sign_out_revokes_one_session_until_it_expires_and_no_longer() -> None:
    """A revoked id stays refused while its session could still be read, then is forgotten:
    the list never holds more than the sessions signed out within one max age. A new sign-in
    with the same token gets a new id."""
    signer = SessionSigner(b"k" * 32, max_age=60)
    revocations = Revocations()
    first, _ = signer.open(token(), now=1000)
    again, _ = signer.open(token(), now=1000)
    assert first.id != again.id and len(first.id) >= 20
    revocations.revoke(first, now=1010)
    revocations.revoke(first, now=1011)  # twice is once
    assert revocations.revoked(first) and not revocations.revoked(again)
    assert len(revocations) == 1
    later, _ = signer.open(token(), now=1050)
    revocations.revoke(later, now=1059)
    revocations.prune(now=1060)  # `first` expired at 1060: its cookie reads as no session now
    assert not revocations.revoked(first) and revocations.revoked(later)
    assert len(revocations) == 1
    revocations.revoke(again, now=2000)  # an expired session is not kept
    assert len(revocations) == 0


def test_csrf_and_sign_in_tokens() -> None:
    signer = SessionSigner(b"k" * 32, max_age=60)
    session, _ = signer.open(token(), now=0)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, session.csrf + "x")
    assert not csrf_ok(session, None)
    nonce, form = signer.sign_in_pair()
    assert signer.sign_in_ok(nonce, form)
    assert not signer.sign_in_ok(nonce + "x", form)
    assert not signer.sign_in_ok(None, form)
    assert not SessionSigner(b"j" * 32, max_age=60).sign_in_ok(nonce, form)


# ---- charts -------------------------------------------------------------------------------------


def parse(svg: str) -> ElementTree.Element:
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    title = root.find(f"{SVG}title")
    assert title is not None and root.get("aria-labelledby") == title.get("id")
    assert "style" not in svg and "<script" not in svg
    return root


def test_interval_chart_draws_a_point_and_an_interval_per_bar() -> None:
    root = parse(
        interval_chart(
            "Means <&>",
            [
                Bar("control", "control", 1.0, 0.5, 1.5),
                Bar("treatment", "treatment", 2.0, 1.8, 2.2),
            ],
        )
    )
    assert root.findtext(f"{SVG}title") == "Means <&>"
    groups = root.findall(f"{SVG}g")
    assert [g.get("class") for g in groups] == ["control", "treatment"]
    for group in groups:
        assert len(group.findall(f"{SVG}circle")) == 1
        assert len(group.findall(f"{SVG}line")) == 3  # the interval and its two ends
    # The interval's ends sit either side of the mean, in the value's order.
    control = groups[0]
    line = control.findall(f"{SVG}line")[0]
    cx = float(control.find(f"{SVG}circle").get("cx"))  # type: ignore[union-attr]
    assert float(line.get("x1")) < cx < float(line.get("x2"))  # type: ignore[arg-type]
    treatment_cx = float(groups[1].find(f"{SVG}circle").get("cx"))  # type: ignore[union-attr]
    assert treatment_cx > cx


def test_interval_chart_with_missing_values_and_zero_line() -> None:
    root = parse(interval_chart("d", [Bar("difference", "difference", None, None, None)]))
    assert "no values yet" in "".join(root.itertext())
    root = parse(interval_chart("d", [Bar("d", "difference", 0.5, 0.1, 0.9)], zero=True))
    zero = [e for e in root.iter(f"{SVG}line") if e.get("class") == "zero"]
    assert len(zero) == 1
    partial = parse(interval_chart("p", [Bar("c", "control", 1.0, None, None)]))
    assert not [e for e in partial.iter(f"{SVG}line") if e.get("class") == "interval"]
    assert len(list(partial.iter(f"{SVG}circle"))) == 1


def test_series_chart_draws_a_point_per_period_and_a_band() -> None:
    points = [Point("a", 1.0, 0.0, 2.0), Point("b", None, None, None), Point("c", 0.5, 0.2, 0.8)]
    root = parse(series_chart("over time", points))
    assert len([c for c in root.iter(f"{SVG}circle")]) == 2
    assert len(list(root.iter(f"{SVG}polygon"))) == 1
    polyline = next(root.iter(f"{SVG}polyline"))
    assert len(polyline.get("points", "").split()) == 2
    labels = {t.text: t.get("text-anchor") for t in root.iter(f"{SVG}text")}
    assert (labels["a"], labels["c"]) == ("start", "end")  # inward: neither leaves the chart


def test_series_chart_empty_and_single_point() -> None:
    assert "no values yet" in "".join(parse(series_chart("t", [])).itertext())
    single = parse(series_chart("t", [Point("only", 2.0, None, None)]))
    assert len(list(single.iter(f"{SVG}circle"))) == 1
    assert not list(single.iter(f"{SVG}polygon")) and not list(single.iter(f"{SVG}polyline"))


# ---- views --------------------------------------------------------------------------------------


def test_prompt_rows_resolve_each_environment_as_the_request_path_does() -> None:
    state = PromptState(
        "support-agent",
        (
            version(ver="1.0.0", active=True, tested=True),
            version(ver="1.1.0", number=2, tested=True),
            version(ver="1.2.0", number=3),
        ),
        active="1.0.0",
    )
    empty = PromptState("no-versions")
    snap = snapshot(state, empty)
    last = AuditEntry(
        at=T0, actor="ada", action="promote", prompt_name="support-agent", version="1.0.0"
    )
    rows = views.prompt_rows(snap, Overrides({}, {}), "production", T0, {"support-agent": last})
    assert [r.state.name for r in rows] == ["support-agent"]
    served = {s.environment: (s.version, s.how) for s in rows[0].served}
    assert served == {
        "development": ("1.2.0", "environment"),
        "staging": ("1.1.0", "environment"),
        "production": ("1.0.0", "environment"),
    }
    assert rows[0].last_change == last and rows[0].experiment is None


def test_prompt_rows_show_overrides_experiments_and_errors() -> None:
    running = experiment(control="1.0.0", treatment="1.1.0")
    state = PromptState(
        "support-agent",
        (version(ver="1.0.0"), version(ver="1.1.0", number=2)),
        experiments=(running,),
    )
    overrides = Overrides({"support-agent": "1.1.0"}, {"staging": {"support-agent": "1.0.0"}})
    rows = views.prompt_rows(snapshot(state), overrides, "development", T0, {})
    served = {s.environment: s for s in rows[0].served}
    assert (served["development"].version, served["development"].how) == ("1.1.0", "override")
    assert (served["staging"].version, served["staging"].how) == ("1.0.0", "override")
    assert served["production"].how == "experiment"
    assert served["production"].experiment == running
    assert rows[0].experiment == running
    after = views.prompt_rows(
        snapshot(state), Overrides({}, {}), "production", T0 - timedelta(1), {}
    )
    production = {s.environment: s for s in after[0].served}["production"]
    assert production.version is None and production.how.startswith("404 no_servable_version")


def test_process_overrides_apply_only_to_the_own_environment() -> None:
    overrides = Overrides({"p": "1.0.0"}, {"staging": {"p": "2.0.0"}})
    assert overrides.seen_by("staging", "production").process == {}
    assert overrides.seen_by("production", "production").process == {"p": "1.0.0"}


def test_trace_links() -> None:
    assert views.trace_link(None, request_id="r1") is None
    assert views.trace_link("http://j/trace/{trace_id}", request_id="r1") is None
    assert (
        views.trace_link("http://j/trace/{trace_id}", request_id="r", trace_id="a b")
        == "http://j/trace/a%20b"
    )
    assert views.trace_link("http://j/search?id={request_id}", request_id="r/1") == (
        "http://j/search?id=r%2F1"
    )


def test_audit_change_lists_each_key_once_in_order() -> None:
    entry = AuditEntry(
        at=T0,
        actor="ada",
        action="promote",
        prompt_name="p",
        before={"active": "1.0.0", "gone": 1, "is_tested": True, "pass_rate": None},
        after={"active": "1.1.0", "new": 2, "is_tested": True, "pass_rate": 1.0},
    )
    assert views.audit_change(entry) == [
        ("active", "1.0.0", "1.1.0"),
        ("gone", "1", "—"),
        ("is_tested", "yes", "yes"),
        ("pass_rate", "not set", "100%"),
        ("new", "—", "2"),
    ]


def test_audit_values_read_as_words() -> None:
    """No raw Python in the audit page: booleans, None, shares, parameters."""
    assert views.readable(True) == "yes" and views.readable(False) == "no"
    assert views.readable(None) == "not set"
    assert views.readable(0.5, "traffic_split") == "50%"
    assert views.readable({"max_tokens": None, "temperature": 0.2}) == (
        "max_tokens: not set, temperature: 0.2"
    )
    assert views.readable([]) == "none"


def test_wrote_cookie_round_trips_any_name_and_is_bounded() -> None:
    names = ["support,agent", "100%", "plain"]
    cookie = views.wrote_cookie(names)
    assert re.fullmatch(r"[A-Za-z0-9%._~,-]+", cookie)
    assert views.wrote_names(cookie, 8) == names
    assert views.wrote_names(cookie, 2) == names[:2]
    assert views.wrote_names("a,a,,b", 8) == ["a", "b"]
    assert views.wrote_names(None, 8) == [] and views.wrote_names("", 8) == []


# ---- difference over time -----------------------------------------------------------------------


def total(
    period: str, variant: str, values: list[float], requests: int | None = None
) -> PeriodTotal:
    return PeriodTotal(
        period,
        variant,  # type: ignore[arg-type]
        len(values) if requests is None else requests,
        len(values),
        sum(values),
        sum(v * v for v in values),
    )


def test_difference_over_time_is_cumulative_with_a_normal_interval() -> None:
    c1, t1 = [1.0, 2.0, 3.0], [2.0, 4.0]
    c2, t2 = [5.0], [6.0, 8.0]
    points = difference_over_time(
        [
            total("2026-11-01T01", "control", c2),
            total("2026-11-01T00", "control", c1),
            total("2026-11-01T00", "treatment", t1, requests=5),
            total("2026-11-01T01", "treatment", t2),
        ]
    )
    assert [p.period for p in points] == ["2026-11-01T00", "2026-11-01T01"]
    first, second = points
    assert (first.control_requests, first.treatment_requests) == (3, 5)
    assert (first.control_mean, first.treatment_mean, first.difference) == (2.0, 3.0, 1.0)
    c, t = c1 + c2, t1 + t2
    mc, mt = sum(c) / len(c), sum(t) / len(t)
    assert second.difference == pytest.approx(mt - mc)
    vc = sum((x - mc) ** 2 for x in c) / (len(c) - 1) / len(c)
    vt = sum((x - mt) ** 2 for x in t) / (len(t) - 1) / len(t)
    half = Z95 * (vc + vt) ** 0.5
    assert (second.low, second.high) == pytest.approx((mt - mc - half, mt - mc + half))


def test_difference_over_time_without_values_or_with_one_arm() -> None:
    assert difference_over_time([]) == []
    (only,) = difference_over_time([total("2026-11-01T00", "control", [1.0, 2.0])])
    assert only.treatment_mean is None and only.difference is None and only.low is None
    (no_values,) = difference_over_time(
        [
            total("2026-11-01T00", "control", [], requests=4),
            total("2026-11-01T00", "treatment", [3.0]),
        ]
    )
    assert no_values.control_requests == 4 and no_values.difference is None


def test_difference_over_time_rolls_many_hours_up_into_days() -> None:
    start = T0
    hours = [(start + timedelta(hours=h)).strftime("%Y-%m-%dT%H") for h in range(HOURLY_UP_TO + 1)]
    points = difference_over_time(
        [total(h, v, [1.0]) for h in hours for v in ("control", "treatment")]
    )
    assert [p.period for p in points] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert [p.control_requests for p in points] == [24, 24, 1]


def test_over_time_chart_labels_hours_and_days() -> None:
    hourly = views.over_time_chart(
        "latency",
        difference_over_time(
            [total("2026-11-01T05", "control", [1.0]), total("2026-11-01T05", "treatment", [2.0])]
        ),
    )
    assert "2026-11-01 05:00" in hourly and "latency" in hourly


# ---- side by side -------------------------------------------------------------------------------


def test_side_by_side_aligns_same_changed_added_and_removed_lines() -> None:
    old = version(content="Line one.\nLine two.\nLine three.")
    new = version(ver="1.1.0", number=2, content="Line one.\nLine 2.\nLine three.\nLine four.")
    rows = side_by_side(old, new)
    message = rows[rows.index(DiffRow("same", "--- system", "--- system")) + 1 :]
    assert message == [
        DiffRow("same", "Line one.", "Line one."),
        DiffRow("changed", "Line two.", "Line 2."),
        DiffRow("same", "Line three.", "Line three."),
        DiffRow("added", None, "Line four."),
    ]
    back = side_by_side(new, old)
    assert back[-1] == DiffRow("removed", "Line four.", None)


def test_side_by_side_shows_parameters_and_uneven_replacements() -> None:
    old = version(content="a\nb")
    new = version(ver="1.1.0", number=2, content="x\ny\nz")
    rows = side_by_side(old, new)
    assert all(r.kind == "same" for r in rows if r.old and r.old.startswith("model:"))
    tail = [r for r in rows if r.kind != "same"]
    assert tail == [
        DiffRow("changed", "a", "x"),
        DiffRow("changed", "b", "y"),
        DiffRow("added", None, "z"),
    ]
    assert all(r.kind == "same" for r in side_by_side(old, old))


def test_one_period_of_the_difference_over_time_draws_its_band() -> None:
    """With a single period there is no polygon to draw: the interval is a band (a rect)."""
    svg = series_chart("d", [Point("2026-03-01", 0.5, 0.1, 0.9)])
    assert svg.count('class="band"') == 1 and "<rect" in svg
    assert "<rect" not in series_chart("d", [Point("2026-03-01", 0.5, None, None)])


def test_metric_units() -> None:
    assert views.metric_unit("latency") == "ms"
    assert views.metric_unit("cost_per_task") == "USD"
    assert views.metric_unit("unknown") == ""
