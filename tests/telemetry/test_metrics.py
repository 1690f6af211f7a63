"""Prometheus rendering and label bounds."""

from __future__ import annotations

import pytest

from gateway.telemetry import metrics
from gateway.telemetry.metrics import Counter, Histogram, route_label


def test_histogram_buckets_are_cumulative() -> None:
    """Each bucket counts observations at or under its bound; +Inf counts all."""
    histogram = Histogram("h", "help", ("route",), (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 5.0):
        histogram.observe(("r",), value)
    text = "\n".join(histogram.render())
    assert 'h_bucket{route="r",le="0.1"} 2' in text
    assert 'h_bucket{route="r",le="1"} 3' in text
    assert 'h_bucket{route="r",le="+Inf"} 4' in text
    assert 'h_count{route="r"} 4' in text and 'h_sum{route="r"} 5.65' in text


def test_label_sets_are_bounded(monkeypatch: object) -> None:
    """Past MAX_SERIES new label sets fold into `other`, so clients cannot grow memory."""
    original = metrics.MAX_SERIES
    metrics.MAX_SERIES = 3
    try:
        counter = Counter("c", "help", ("model",))
        for i in range(10):
            counter.inc((f"m{i}",))
    finally:
        metrics.MAX_SERIES = original
    assert len(counter.values) == 4
    assert counter.values[("other",)] == 7


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in label values are escaped."""
    counter = Counter("c", "help", ("model",))
    counter.inc(('a"b\\c\nd',))
    assert 'c{model="a\\"b\\\\c\\nd"} 1' in counter.render()


@pytest.mark.parametrize(
    ("route", "label"),
    [
        ("/chat/completions", "/chat/completions"),
        ("/files/file-abc123/content", "/files/{id}/content"),
        ("/models/gpt-4o-mini", "/models/{id}"),
        ("/models/ft:gpt-4o:org::x", "/models/{id}"),
        ("/responses/resp_68ab/input_items", "/responses/{id}/input_items"),
    ],
)
def test_route_labels_fold_object_ids(route: str, label: str) -> None:
    """Ids and model names in paths become {id}, so clients cannot grow the label set."""
    assert route_label(route) == label
