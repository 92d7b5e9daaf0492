"""Graceful shutdown on SIGTERM: stop accepting, answer what was already sent, then exit.

uvicorn's own graceful shutdown closes the listening socket, lets requests in progress finish, and
closes every *idle* keep-alive connection at once. A request the client had already written on such a
connection (it is in flight, or in the socket buffer, when the signal arrives) is then lost: the client
sees the connection close without an answer. :class:`DrainingHttpToolsProtocol` closes an idle
connection only after a short drain window (``shutdown_drain_seconds``); a request that arrives in
that window is answered with ``Connection: close``, and so is every request in progress when the
signal came, so each client learns to reconnect and no request it sent is dropped.

:func:`sparkpipe.serving.app.run` passes the class to ``uvicorn.run(http=...)``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a drain window for idle keep-alive connections."""

    drain_seconds: float = 1.0
    """How long an idle connection stays open after the shutdown began (set from the settings)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._draining = False
        self._drain_timer: asyncio.TimerHandle | None = None

    def shutdown(self) -> None:
        """Called by the server when the shutdown begins (listening socket already closed)."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self._unset_keepalive_if_required()
            self._drain_timer = self.loop.call_later(self.drain_seconds, self._close_if_idle)
        else:
            self.cycle.keep_alive = False  # answered, with Connection: close, then closed

    def _close_if_idle(self) -> None:
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        super().connection_lost(exc)
