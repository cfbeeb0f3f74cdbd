"""The session's JSON events on the client's data channel."""

from __future__ import annotations

import asyncio
from collections import deque

from aiortc import RTCDataChannel


class DataChannelEvents:
    """The session's JSON events on the client's data channel: held until it opens (bounded), then
    sent in order; dropped (and counted) while the channel has too much unsent."""

    def __init__(self, max_held: int, max_buffered_bytes: int) -> None:
        self.channel: RTCDataChannel | None = None
        self._held: deque[str] = deque(maxlen=max_held)
        self.max_buffered_bytes = max_buffered_bytes
        self.dropped = 0

    def attach(self, channel: RTCDataChannel, first: str) -> None:
        self.channel = channel
        self._send(first)
        while self._held:
            self._send(self._held.popleft())

    def send(self, text: str) -> None:
        if self.channel is None:
            if len(self._held) == self._held.maxlen:
                self.dropped += 1
            self._held.append(text)
        else:
            self._send(text)

    def _send(self, text: str) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            self.dropped += 1
            return
        if channel.bufferedAmount > self.max_buffered_bytes:
            self.dropped += 1
            return
        channel.send(text)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until what was sent has left, so that a last ``done`` reaches the client."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (self.channel is not None and self.channel.readyState == "open" and self.channel.bufferedAmount > 0
               and loop.time() < deadline):
            await asyncio.sleep(0.02)
