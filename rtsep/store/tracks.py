"""Append-only track files: int16 mono PCM, one file per track, silence-filled up to each write's position."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import IO

import numpy as np

from rtsep.audio import float_to_s16
from rtsep.errors import StoreError

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_name(name: str) -> str:
    if not SAFE_NAME.match(name):
        raise ValueError(f"unsafe name {name!r}")
    return name


class TrackFiles:
    """``<root>/<session>/tracks/<track>.pcm``; every write reaches the OS before the call returns."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], IO[bytes]] = {}

    def session_dir(self, session_id: str) -> Path:
        return self.root / check_name(session_id)

    def path(self, session_id: str, track: str) -> Path:
        return self.session_dir(session_id) / "tracks" / f"{check_name(track)}.pcm"

    def create(self, session_id: str) -> None:
        try:
            (self.session_dir(session_id) / "tracks").mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise StoreError(f"cannot create the track folder of {session_id}: {exc}") from exc

    def write(self, session_id: str, track: str, start_sample: int, samples: np.ndarray) -> None:
        key = (session_id, track)
        with self._lock:
            try:
                f = self._open.get(key)
                if f is None:
                    f = self._open[key] = open(self.path(session_id, track), "ab")
                position = f.tell() // 2
                if start_sample < position:  # overlapping write: keep what was written, append the rest
                    samples = samples[position - start_sample :]
                    start_sample = position
                if start_sample > position:
                    f.write(np.zeros(start_sample - position, "<i2").tobytes())
                f.write(float_to_s16(samples).tobytes())
                f.flush()
            except OSError as exc:
                raise StoreError(f"cannot write track {track} of {session_id}: {exc}") from exc

    def names(self, session_id: str) -> list[str]:
        return sorted(p.stem for p in (self.session_dir(session_id) / "tracks").glob("*.pcm"))

    def read(self, session_id: str, track: str) -> np.ndarray | None:
        try:
            path = self.path(session_id, track)
        except ValueError:
            return None
        if not path.exists():
            return None
        data = path.read_bytes()
        return np.frombuffer(data[: len(data) // 2 * 2], "<i2")

    def close(self, session_id: str) -> None:
        with self._lock:
            for key in [k for k in self._open if k[0] == session_id]:
                try:
                    self._open.pop(key).close()
                except OSError as exc:
                    log.warning("closing track %s: %s", key, exc, exc_info=True)

    def delete(self, session_id: str) -> None:
        import shutil

        self.close(session_id)
        folder = self.session_dir(session_id)
        if folder.exists():
            shutil.rmtree(folder, onerror=lambda _, path, info: log.error("deleting %s failed", path, exc_info=info))
