"""Typed configuration, loaded from a TOML file, environment variables (RTSEP_*) and CLI flags (in
increasing order of precedence). Each layer keeps its own dataclass; this module only assembles them.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtsep.diarize.clustering import ClusteringConfig
from rtsep.diarize.online import DiarizationConfig
from rtsep.errors import ConfigError
from rtsep.pipeline import PipelineConfig
from rtsep.runtime.diarization import RuntimeConfig
from rtsep.store.factory import StoreLocation, parse_store_url
from rtsep.transport.webrtc.config import WebRtcConfig


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "rtsep-data"
    max_sessions: int = 16
    max_message_bytes: int = 1 << 20
    log_level: str = "info"
    retention: str = "24h"  # session artifacts are deleted this long after the session ended
    api_keys: tuple[str, ...] = ()  # when set, creating a session needs one of them
    idle_timeout_s: float = 30.0  # a client that sends nothing for this long is closed (4408)
    max_realtime_ratio: float = 4.0  # audio faster than this x real time ...
    realtime_burst_s: float = 30.0  # ... beyond this many seconds ahead of the clock is refused (4429)
    drain_timeout_s: float = 30.0  # on SIGTERM: how long live sessions get to flush before the process exits
    store: str = ""  # sqlite:///PATH or postgresql://USER@HOST:PORT/DB; empty: SQLite + files in data_dir
    replica_id: str = ""  # this replica's name in a shared store (empty: host name, pid and a random suffix)
    lease: str = "10s"  # shared store: a replica that has not renewed its lease this long is taken as dead

    @property
    def retention_s(self) -> float:
        return parse_duration_s(self.retention)

    @property
    def lease_s(self) -> float:
        return parse_duration_s(self.lease)

    @property
    def store_location(self) -> StoreLocation:
        return parse_store_url(self.store, self.data_dir)


def parse_duration_s(text: str) -> float:
    """'90s', '30m', '24h', '7d' or a number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value = str(text).strip().lower()
    try:
        if value and value[-1] in units:
            seconds = float(value[:-1]) * units[value[-1]]
        else:
            seconds = float(value)
    except ValueError:
        raise ConfigError(f"invalid duration {text!r}; use e.g. 90s, 30m, 24h, 7d") from None
    if seconds <= 0:
        raise ConfigError(f"duration must be positive, got {text!r}")
    return seconds


@dataclass(frozen=True)
class AppConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)


ENV_KEYS = {
    "RTSEP_HOST": ("server", "host"),
    "RTSEP_PORT": ("server", "port"),
    "RTSEP_DATA_DIR": ("server", "data_dir"),
    "RTSEP_MAX_SESSIONS": ("server", "max_sessions"),
    "RTSEP_DEVICE": ("runtime", "device"),
    "RTSEP_MAX_SPEAKERS": ("pipeline", "max_speakers"),
    "RTSEP_RETENTION": ("server", "retention"),
    "RTSEP_API_KEYS": ("server", "api_keys"),  # comma-separated
    "RTSEP_STORE": ("server", "store"),
    "RTSEP_REPLICA_ID": ("server", "replica_id"),
    "RTSEP_LEASE": ("server", "lease"),
}


def _coerce(cls: type, section: str, values: dict[str, Any]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown setting [{section}] {key!r}; known: {sorted(fields)}")
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            value = tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else tuple(value)
        elif isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        elif isinstance(default, int) and not isinstance(value, int):
            value = int(value)
        elif isinstance(default, float) and not isinstance(value, float):
            value = float(value)
        out[key] = value
    return out


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                env: dict[str, str] | None = None) -> AppConfig:
    """Sections: [server], [runtime], [diarization], [clustering], [pipeline], [webrtc] (whose variables are
    ``RTSEP_WEBRTC_<SETTING>``, see rtsep.transport.webrtc.config)."""
    names = ("server", "runtime", "diarization", "clustering", "pipeline", "webrtc")
    sections: dict[str, dict[str, Any]] = {k: {} for k in names}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for name, values in data.items():
            if name not in sections or not isinstance(values, dict):
                raise ConfigError(f"unknown config section [{name}]; known: {sorted(sections)}")
            sections[name].update(values)
    for key, (section, name) in ENV_KEYS.items():
        value = (os.environ if env is None else env).get(key)
        if value:
            sections[section][name] = value
    for section, values in (overrides or {}).items():
        sections[section].update({k: v for k, v in values.items() if v is not None})
    try:
        clustering = ClusteringConfig(**_coerce(ClusteringConfig, "clustering", sections["clustering"]))
        diarization = DiarizationConfig(
            **_coerce(DiarizationConfig, "diarization", sections["diarization"]), clustering=clustering
        )
        runtime = RuntimeConfig(**_coerce(RuntimeConfig, "runtime", sections["runtime"]))
        pipeline = PipelineConfig(diarization=diarization, runtime=runtime,
                                  **_coerce(PipelineConfig, "pipeline", sections["pipeline"]))
        server = ServerConfig(**_coerce(ServerConfig, "server", sections["server"]))
        webrtc = WebRtcConfig.load(sections["webrtc"], os.environ if env is None else env)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    if pipeline.max_speakers < 1 or server.max_sessions < 1:
        raise ConfigError("max_speakers and max_sessions must be >= 1")
    server.retention_s  # noqa: B018 - validates the duration now rather than at the first sweep
    server.lease_s  # noqa: B018 - likewise
    server.store_location  # noqa: B018 - validates the store URL at start-up
    return AppConfig(server=server, pipeline=pipeline, webrtc=webrtc)
