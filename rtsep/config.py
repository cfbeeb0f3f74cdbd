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


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "rtsep-data"
    max_sessions: int = 16
    max_message_bytes: int = 1 << 20
    log_level: str = "info"


@dataclass(frozen=True)
class AppConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


ENV_KEYS = {
    "RTSEP_HOST": ("server", "host"),
    "RTSEP_PORT": ("server", "port"),
    "RTSEP_DATA_DIR": ("server", "data_dir"),
    "RTSEP_MAX_SESSIONS": ("server", "max_sessions"),
    "RTSEP_DEVICE": ("runtime", "device"),
    "RTSEP_MAX_SPEAKERS": ("pipeline", "max_speakers"),
}


def _coerce(cls: type, section: str, values: dict[str, Any]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown setting [{section}] {key!r}; known: {sorted(fields)}")
        default = getattr(cls(), key)
        if isinstance(default, bool):
            value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        elif isinstance(default, int) and not isinstance(value, int):
            value = int(value)
        elif isinstance(default, float) and not isinstance(value, float):
            value = float(value)
        out[key] = value
    return out


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, dict[str, Any]] | None = None,
                env: dict[str, str] | None = None) -> AppConfig:
    """Sections: [server], [runtime], [diarization], [clustering], [pipeline]."""
    sections: dict[str, dict[str, Any]] = {k: {} for k in ("server", "runtime", "diarization", "clustering", "pipeline")}
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
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    if pipeline.max_speakers < 1 or server.max_sessions < 1:
        raise ConfigError("max_speakers and max_sessions must be >= 1")
    return AppConfig(server=server, pipeline=pipeline)
