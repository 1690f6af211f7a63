"""A server extension that tells the app at once when its client's connection is lost.

`GatewayProtocol` (gateway/api/server.py) puts a `Disconnect` into each request's scope, as
`scope["extensions"][EXTENSION]["state"]` (ASGI: an extension's data is a dict); it calls
`lose()` from `connection_lost` while that request's answer is incomplete. The proxy sets
`callback` for as long as a call should be cancelled by a hang-up. Without the extension
(another ASGI server), the proxy watches for the `http.disconnect` message instead, which costs
a task per long call (`proxy.HangUp`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

EXTENSION = "gateway.disconnect"


class Disconnect:
    """Whether one request's connection is lost, and what to call when it is."""

    __slots__ = ("callback", "lost")

    def __init__(self) -> None:
        self.callback: Callable[[], None] | None = None
        self.lost = False

    def lose(self) -> None:
        """The connection is gone: call the callback (once), if one is set."""
        self.lost = True
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()


def disconnect_of(scope: Mapping[str, Any]) -> Disconnect | None:
    """The request's `Disconnect`, or None when the server does not offer the extension."""
    extensions = scope.get("extensions")
    state = extensions.get(EXTENSION, {}).get("state") if extensions else None
    return state if isinstance(state, Disconnect) else None
