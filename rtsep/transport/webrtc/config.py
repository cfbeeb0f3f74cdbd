"""WebRTC transport settings: the ``[webrtc]`` section of the config file, then ``RTSEP_WEBRTC_*`` variables.

Kept apart from the rest of rtsep.transport.webrtc so that loading a configuration does not import aiortc.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtsep.errors import ConfigError

ICE_URL_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
ENV_PREFIX = "RTSEP_WEBRTC_"


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("an ICE server needs at least one URL")
        for url in self.urls:
            if not isinstance(url, str) or not url.startswith(ICE_URL_SCHEMES):
                raise ConfigError(f"ICE server URL {url!r} must start with one of {ICE_URL_SCHEMES}")
            if url.startswith(("turn:", "turns:")) and (self.username is None or self.credential is None):
                raise ConfigError(f"TURN server {url!r} needs a username and a credential")

    def public(self) -> dict[str, Any]:
        """As the browser's RTCPeerConnection wants it."""
        body: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            body["username"] = self.username
            body["credential"] = self.credential
        return body


@dataclass(frozen=True)
class WebRtcConfig:
    """WebRTC transport settings. No STUN/TURN by default: LAN and localhost need none."""

    ice_servers: tuple[IceServer, ...] = ()
    frame_ms: int = 20  # outgoing packetisation, and the pacer's tick
    prebuffer_ms: int = 100  # playout cushion after a (re)start, against inference jitter
    max_buffer_ms: int = 1000  # playout bound: past it the oldest audio is dropped
    max_pending_steps: int = 8  # steps awaiting the session before new ones are shed (marked gaps)
    max_queued_frames: int = 5  # frames waiting in an outgoing track (its sender may not be running yet)
    connect_timeout_s: float = 20.0  # from the answer to the connection being established
    max_offer_bytes: int = 64 * 1024
    max_channel_buffer_bytes: int = 1 << 20  # events are dropped while the data channel holds more

    def __post_init__(self) -> None:
        if not 10 <= self.frame_ms <= 60 or 1000 % self.frame_ms:
            raise ConfigError("frame_ms must divide 1000 and lie within 10..60")
        if self.prebuffer_ms < 0 or self.max_buffer_ms <= self.prebuffer_ms + self.frame_ms:
            raise ConfigError("need 0 <= prebuffer_ms and max_buffer_ms > prebuffer_ms + frame_ms")
        if self.max_pending_steps < 1 or self.max_queued_frames < 1 or self.connect_timeout_s <= 0:
            raise ConfigError("max_pending_steps, max_queued_frames and connect_timeout_s must be positive")

    @classmethod
    def load(cls, values: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> WebRtcConfig:
        """From the config file's ``[webrtc]`` table (``values``), overridden by ``RTSEP_WEBRTC_<FIELD>``
        variables of ``env`` (default: the process environment).

        ``ice_servers``: in the file, a list of ``{urls, username, credential}`` tables or of ``stun:`` URLs;
        in ``RTSEP_WEBRTC_ICE_SERVERS``, the same list as JSON, or comma-separated ``stun:`` URLs."""
        env = os.environ if env is None else env
        known = {f.name: f for f in dataclasses.fields(cls)}
        settings: dict[str, Any] = {}
        for key, value in (values or {}).items():
            if key not in known:
                raise ConfigError(f"unknown setting [webrtc] {key!r}; known: {sorted(known)}")
            settings[key] = _ice_servers(value) if key == "ice_servers" else _typed(key, value, f"[webrtc] {key}")
        for key in known:
            raw = env.get(ENV_PREFIX + key.upper(), "").strip()
            if raw:
                name = ENV_PREFIX + key.upper()
                settings[key] = parse_ice_servers(raw) if key == "ice_servers" else _typed(key, raw, name)
        return cls(**settings)


def _typed(key: str, value: Any, where: str) -> Any:
    kind = type(getattr(WebRtcConfig(), key))
    if isinstance(value, bool) or (isinstance(value, float) and kind is int):
        raise ConfigError(f"{where}={value!r} is not a {kind.__name__}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}={value!r} is not a {kind.__name__}") from None


def _ice_servers(items: Any) -> tuple[IceServer, ...]:
    """A list of ICE servers: each a ``{urls, username?, credential?}`` mapping or one URL string."""
    if isinstance(items, str):
        return parse_ice_servers(items)
    if not isinstance(items, list):
        raise ConfigError(f"ICE servers must be a list, got {items!r}")
    servers = []
    for item in items:
        if isinstance(item, str):
            servers.append(IceServer((item.strip(),)))
            continue
        if not isinstance(item, dict) or "urls" not in item:
            raise ConfigError(f"each ICE server needs 'urls', got {item!r}")
        unknown = set(item) - {"urls", "username", "credential"}
        if unknown:
            raise ConfigError(f"unknown ICE server field(s) {sorted(unknown)}")
        urls = item["urls"]
        servers.append(IceServer(tuple([urls] if isinstance(urls, str) else urls),
                                 item.get("username"), item.get("credential")))
    return tuple(servers)


def parse_ice_servers(raw: str) -> tuple[IceServer, ...]:
    """``RTSEP_WEBRTC_ICE_SERVERS``: a JSON list (as in the file) or comma-separated ``stun:`` URLs."""
    raw = raw.strip()
    if raw.startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"ICE servers are not valid JSON: {exc}") from None
        return _ice_servers(items)
    return tuple(IceServer((url.strip(),)) for url in raw.split(",") if url.strip())
