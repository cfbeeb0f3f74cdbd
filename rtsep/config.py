"""Typed configuration, loaded from a TOML file, environment variables (RTSEP_*) and CLI flags (in
increasing order of precedence). Each layer keeps its own dataclass; this module only assembles them:

=================  =============================================  =========================
section            dataclass                                      read by
=================  =============================================  =========================
``[server]``       ServerConfig (here)                            rtsep.server
``[pipeline]``     rtsep.pipeline.PipelineConfig                  sessions, drivers
``[diarization]``  rtsep.diarize.online.DiarizationConfig         the diarizer
``[clustering]``   rtsep.diarize.clustering.ClusteringConfig      the diarizer's clustering
``[pyannote]``     rtsep.diarize.pyannote_stream.PyannoteStreamConfig  ``--diarizer pyannote``
``[overlap]``      rtsep.diarize.overlap.OverlapConfig            the overlap-aware final timeline
``[runtime]``      rtsep.runtime.diarization.RuntimeConfig        the inference runtimes
``[separator]``    rtsep.separate.config.SeparatorConfig          the separator
``[adaptation]``   rtsep.separate.config.AdaptationConfig         in-session adaptation
``[tracks]``       rtsep.stream.render.TracksConfig               the final tracks at a session's end
``[attribution]``  rtsep.stream.attribution.AttributionConfig     separated sources in the speaker tracks
``[denoise]``      rtsep.enhance.config.DenoiseConfig             the denoiser (``--denoise``)
``[offline]``      rtsep.offline.OfflineConfig                    ``rtsep process`` alone
``[voices]``       rtsep.stream.naming.VoicesConfig               enrollment and named speakers
``[webrtc]``       rtsep.transport.webrtc.config.WebRtcConfig     the WebRTC transport
=================  =============================================  =========================
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtsep.diarize.clustering import ClusteringConfig
from rtsep.diarize.online import DiarizationConfig
from rtsep.diarize.overlap import OverlapConfig
from rtsep.diarize.pyannote_stream import PyannoteStreamConfig
from rtsep.enhance.config import DenoiseConfig
from rtsep.errors import ConfigError
from rtsep.offline import OfflineConfig
from rtsep.pipeline import PipelineConfig
from rtsep.runtime.diarization import RuntimeConfig
from rtsep.separate.config import AdaptationConfig, SeparatorConfig
from rtsep.store.factory import StoreLocation, parse_store_url
from rtsep.stream.attribution import AttributionConfig
from rtsep.stream.naming import VoicesConfig
from rtsep.stream.render import TracksConfig
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
    # WebSocket permessage-deflate (RFC 7692): off, because PCM audio hardly compresses and deflating every frame to
    # and from every client cost most of the event loop's CPU under load (bench/RESULTS.md "Capacity with separation
    # on"); true lets clients that offer it negotiate it
    ws_per_message_deflate: bool = False

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
    offline: OfflineConfig = field(default_factory=OfflineConfig)


log = logging.getLogger(__name__)

SECTIONS = ("server", "runtime", "diarization", "clustering", "pyannote", "overlap", "pipeline", "separator",
            "adaptation", "tracks", "attribution", "denoise", "offline", "voices", "webrtc")
# the dataclass behind each plain section ([webrtc] has its own loader)
SECTION_TYPES: dict[str, type] = {
    "server": ServerConfig, "runtime": RuntimeConfig, "diarization": DiarizationConfig,
    "clustering": ClusteringConfig, "pyannote": PyannoteStreamConfig, "overlap": OverlapConfig,
    "pipeline": PipelineConfig, "separator": SeparatorConfig, "adaptation": AdaptationConfig, "tracks": TracksConfig,
    "attribution": AttributionConfig, "denoise": DenoiseConfig, "offline": OfflineConfig, "voices": VoicesConfig,
}

# Before the split into [separator], [adaptation] and [offline], these keys sat in [pipeline]. A file that still
# has them loads as before (each key to the one setting it always meant), with one deprecation line in the log.
PIPELINE_ALIASES = {
    "separator": ("separator", "name"),
    "separator_checkpoint": ("separator", "checkpoint"),
    "separator_dir": ("separator", "dir"),
    "separator_norm_memory_s": ("separator", "norm_memory_s"),
    "adapt_steps": ("adaptation", "steps"),
    "adapt_batch_size": ("adaptation", "batch_size"),
    "adapt_live": ("adaptation", "live"),
    "adapt_min_speech_s": ("adaptation", "min_speech_s"),
    "adapt_min_similarity": ("adaptation", "min_similarity"),
    "adapt_min_periodicity": ("adaptation", "min_periodicity"),
    "adapt_threads": ("offline", "adapt_threads"),
    "adapt_compile": ("offline", "adapt_compile"),
    "offline_ensemble": ("offline", "ensemble"),
    "offline_wiener": ("offline", "wiener"),
}


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


def section_fields(section: str) -> dict[str, Any]:
    """The settings of a plain section and their defaults (nested dataclasses, assembled here, left out)."""
    cls = SECTION_TYPES[section]
    defaults = cls()
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(cls)
            if not dataclasses.is_dataclass(getattr(defaults, f.name))}


def _move_pipeline_aliases(sections: dict[str, dict[str, Any]], source: str) -> None:
    """Maps the pre-split [pipeline] keys of ``source`` onto their sections; a key set both ways differently is an
    error rather than a silent choice."""
    old = sorted(key for key in sections["pipeline"] if key in PIPELINE_ALIASES)
    if not old:
        return
    for key in old:
        section, name = PIPELINE_ALIASES[key]
        value = sections["pipeline"].pop(key)
        if name in sections[section] and sections[section][name] != value:
            raise ConfigError(f"{source}: [pipeline] {key} = {value!r} and [{section}] {name} = "
                              f"{sections[section][name]!r} disagree; keep only [{section}] {name}")
        sections[section][name] = value
    log.warning("%s: deprecated [pipeline] keys, read as their new sections: %s (docs/deploy.md, Settings)", source,
                ", ".join(f"{key} -> [{PIPELINE_ALIASES[key][0]}] {PIPELINE_ALIASES[key][1]}" for key in old))


def _coerce(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """The section's values with the types of their defaults (the file gives typed values; the environment and
    the command line may give strings)."""
    fields = section_fields(section)
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown setting [{section}] {key!r}; known: {sorted(fields)}")
        default = fields[key]
        try:
            if isinstance(default, tuple):
                value = (tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str)
                         else tuple(value))
            elif isinstance(default, bool):
                value = value if isinstance(value, bool) else _BOOLEANS[str(value).strip().lower()]
            elif isinstance(default, int) and not isinstance(value, int):
                value = int(value)
            elif isinstance(default, float) and not isinstance(value, float):
                value = float(value)
        except (KeyError, TypeError, ValueError):
            kind = type(default).__name__
            raise ConfigError(f"[{section}] {key}: expected {'a' if kind != 'int' else 'an'} {kind}, got {value!r}"
                              ) from None
        out[key] = value
    return out


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                env: dict[str, str] | None = None) -> AppConfig:
    """Sections: see the module's table; [webrtc]'s variables are ``RTSEP_WEBRTC_<SETTING>``
    (rtsep.transport.webrtc.config). ``overrides`` (the command line) use the same section and setting names."""
    sections: dict[str, dict[str, Any]] = {k: {} for k in SECTIONS}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for name, values in data.items():
            if name not in sections or not isinstance(values, dict):
                raise ConfigError(f"unknown config section [{name}]; known: {sorted(sections)}")
            sections[name].update(values)
        _move_pipeline_aliases(sections, str(path))
    for key, (section, name) in ENV_KEYS.items():
        value = (os.environ if env is None else env).get(key)
        if value:
            sections[section][name] = value
    for section, values in (overrides or {}).items():
        if section not in sections:
            raise ConfigError(f"unknown config section [{section}]; known: {sorted(sections)}")
        sections[section].update({k: v for k, v in values.items() if v is not None})
    try:
        clustering = ClusteringConfig(**_coerce("clustering", sections["clustering"]))
        pyannote = PyannoteStreamConfig(**_coerce("pyannote", sections["pyannote"]))
        overlap = OverlapConfig(**_coerce("overlap", sections["overlap"]))
        diarization = DiarizationConfig(
            **_coerce("diarization", sections["diarization"]), clustering=clustering, pyannote=pyannote,
            overlap=overlap,
        )
        runtime = RuntimeConfig(**_coerce("runtime", sections["runtime"]))
        separator = SeparatorConfig(**_coerce("separator", sections["separator"]))
        adaptation = AdaptationConfig(**_coerce("adaptation", sections["adaptation"]))
        tracks = TracksConfig(**_coerce("tracks", sections["tracks"]))
        attribution = AttributionConfig(**_coerce("attribution", sections["attribution"]))
        denoise = DenoiseConfig(**_coerce("denoise", sections["denoise"]))
        voices = VoicesConfig(**_coerce("voices", sections["voices"]))
        pipeline = PipelineConfig(diarization=diarization, runtime=runtime, separator=separator, adaptation=adaptation,
                                  tracks=tracks, attribution=attribution, denoise=denoise, voices=voices,
                                  **_coerce("pipeline", sections["pipeline"]))
        offline = OfflineConfig(**_coerce("offline", sections["offline"]))
        server = ServerConfig(**_coerce("server", sections["server"]))
        webrtc = WebRtcConfig.load(sections["webrtc"], os.environ if env is None else env)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    if server.max_sessions < 1:
        raise ConfigError(f"[server] max_sessions must be >= 1, got {server.max_sessions}")
    server.retention_s  # noqa: B018 - validates the duration now rather than at the first sweep
    server.lease_s  # noqa: B018 - likewise
    server.store_location  # noqa: B018 - validates the store URL at start-up
    return AppConfig(server=server, pipeline=pipeline, webrtc=webrtc, offline=offline)
