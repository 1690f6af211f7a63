"""Finished calls are settled (record, span, observers) a moment after they end, a slice per turn
of the event loop, in the order they finished."""

from __future__ import annotations

import asyncio
import time

from gateway import service
from gateway.core.model import RegistrySnapshot
from gateway.service import GatewayService
from gateway.settings import load
from gateway.telemetry.events import CallRecord
from gateway.upstream.client import HttpUpstream


class Snapshots:
    current = RegistrySnapshot()
    loaded = True


class Seen:
    """An observer that notes each record and the loop turn it came in."""

    def __init__(self, expected: int) -> None:
        self.turn = 0
        self.records: list[tuple[int, str]] = []
        self.expected = expected
        self.all = asyncio.Event()

    def call_finished(self, record: CallRecord) -> None:
        self.records.append((self.turn, record.request_id))
        if len(self.records) == self.expected:
            self.all.set()


async def test_calls_are_settled_a_slice_per_turn_in_order() -> None:
    settings = load(None, {"GATEWAY_UPSTREAM_URL": "mock"})
    ids = [f"req_{i:02d}" for i in range(26)]
    seen = Seen(len(ids))
    upstream = HttpUpstream(settings.upstream)
    gateway = GatewayService(settings, Snapshots(), upstream, observers=[seen])
    for request_id in ids:
        started = time.perf_counter()
        call = gateway.arrive("GET", "/models", [], request_id=request_id, started=started)
        gateway.finish(call, status=200)
    loop = asyncio.get_running_loop()

    def tick() -> None:  # a callback per loop turn, as socket callbacks would be
        seen.turn += 1
        if len(seen.records) < len(ids):
            loop.call_soon(tick)

    loop.call_soon(tick)
    await asyncio.wait_for(seen.all.wait(), 5)
    assert [request_id for _, request_id in seen.records] == ids
    per_turn: dict[int, int] = {}
    for turn, _ in seen.records:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) <= service.SETTLE_SLICE < len(ids)
    assert len(per_turn) >= -(-len(ids) // service.SETTLE_SLICE)  # 26 in slices of 8: 4 turns
