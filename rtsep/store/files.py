"""The embedded default store: one folder per session under the data dir.

    <data_dir>/sessions/<id>/meta.json     SessionInfo (replaced atomically)
    <data_dir>/sessions/<id>/live.jsonl    one closed live segment per line, appended as produced
    <data_dir>/sessions/<id>/final.json    the final timeline (replaced atomically)
    <data_dir>/sessions/<id>/tracks/<name>.pcm   int16 mono PCM at the session's rate, appended as produced

Every write reaches the operating system before the call returns, so a killed server (even kill -9)
loses nothing already written; a torn last line of live.jsonl is skipped when reading.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np

from rtsep.audio import float_to_s16
from rtsep.errors import StoreError
from rtsep.store.base import SessionInfo, SessionStore

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_name(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"unsafe name {name!r}")
    return name


class FileSessionStore(SessionStore):
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir)
        self.sessions_dir = self.root / "sessions"
        try:
            self.sessions_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data dir {self.sessions_dir}: {exc}") from exc
        self._lock = threading.Lock()
        self._tracks: dict[tuple[str, str], IO[bytes]] = {}
        self._infos: dict[str, SessionInfo] = {}
        self._load_existing()

    # --- paths ---

    def _dir(self, session_id: str) -> Path:
        return self.sessions_dir / _check_name(session_id)

    def _track_path(self, session_id: str, track: str) -> Path:
        return self._dir(session_id) / "tracks" / f"{_check_name(track)}.pcm"

    # --- start-up ---

    def _load_existing(self) -> None:
        for meta in sorted(self.sessions_dir.glob("*/meta.json")):
            try:
                data = json.loads(meta.read_text())
                info = SessionInfo(**data)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable session %s: %s", meta.parent.name, exc)
                continue
            if info.state == "live":  # the server died while this session streamed
                info.state = "interrupted"
                info.outcome = "server_restart"
                self._write_meta(info)
            self._infos[info.session_id] = info

    # --- writes ---

    def _write_atomic(self, path: Path, text: str) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc

    def _write_meta(self, info: SessionInfo) -> None:
        self._write_atomic(self._dir(info.session_id) / "meta.json", json.dumps(dataclasses.asdict(info)))

    def create(self, info: SessionInfo) -> None:
        directory = self._dir(info.session_id)
        try:
            (directory / "tracks").mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise StoreError(f"cannot create session dir {directory}: {exc}") from exc
        with self._lock:
            self._infos[info.session_id] = info
        self._write_meta(info)

    def update(self, info: SessionInfo) -> None:
        with self._lock:
            self._infos[info.session_id] = info
        self._write_meta(info)

    def append_live_segment(self, session_id: str, speaker: str, start_s: float, end_s: float) -> None:
        line = json.dumps({"speaker": speaker, "start_s": round(start_s, 3), "end_s": round(end_s, 3)})
        try:
            with open(self._dir(session_id) / "live.jsonl", "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            raise StoreError(f"cannot append to the live timeline of {session_id}: {exc}") from exc

    def write_final(self, session_id: str, timeline: dict[str, Any]) -> None:
        self._write_atomic(self._dir(session_id) / "final.json", json.dumps(timeline))

    def write_track(self, session_id: str, track: str, start_sample: int, samples: np.ndarray) -> None:
        key = (session_id, track)
        with self._lock:
            f = self._tracks.get(key)
            try:
                if f is None:
                    f = open(self._track_path(session_id, track), "ab")
                    self._tracks[key] = f
                position = f.tell() // 2
                if start_sample < position:  # overlapping write: keep what was written, append the rest
                    samples = samples[position - start_sample :]
                    start_sample = position
                if start_sample > position:
                    f.write(np.zeros(start_sample - position, "<i2").tobytes())
                pcm = float_to_s16(samples)
                f.write(pcm.tobytes())
                f.flush()
            except OSError as exc:
                raise StoreError(f"cannot write track {track} of {session_id}: {exc}") from exc

    def close_session(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._tracks if k[0] == session_id]:
                try:
                    self._tracks.pop(key).close()
                except OSError as exc:
                    log.warning("closing track %s: %s", key, exc)

    # --- reads ---

    def get(self, session_id: str) -> SessionInfo | None:
        if not _SAFE_NAME.match(session_id):
            return None
        with self._lock:
            return self._infos.get(session_id)

    def all_sessions(self) -> list[SessionInfo]:
        with self._lock:
            return list(self._infos.values())

    def live_segments(self, session_id: str) -> list[dict[str, Any]]:
        path = self._dir(session_id) / "live.jsonl"
        if not path.exists():
            return []
        segments = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                segments.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash
        return segments

    def final_timeline(self, session_id: str) -> dict[str, Any] | None:
        path = self._dir(session_id) / "final.json"
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def track_names(self, session_id: str) -> list[str]:
        return sorted(p.stem for p in (self._dir(session_id) / "tracks").glob("*.pcm"))

    def read_track(self, session_id: str, track: str) -> np.ndarray | None:
        try:
            path = self._track_path(session_id, track)
        except ValueError:
            return None
        if not path.exists():
            return None
        data = path.read_bytes()
        return np.frombuffer(data[: len(data) // 2 * 2], "<i2")
