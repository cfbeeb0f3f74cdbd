"""The embedded default store: SQLite (WAL) for sessions and timelines, files for track audio.

    <data_dir>/rtsep.sqlite3                       sessions, live segments, final timelines; enrolled voices
                                                   (embeddings only; not session data: retention keeps them)
    <data_dir>/sessions/<id>/tracks/<name>.pcm     int16 mono PCM at the session's rate, appended as produced

Each write is its own committed transaction (WAL, synchronous=NORMAL): a killed process (kill -9) loses
nothing already written. A server started on a data dir marks the sessions that were live as interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np

from rtsep.errors import StoreError, VoiceExists
from rtsep.store.base import SessionInfo, SessionStore, VoiceRecord, voice_bytes, voice_from_bytes
from rtsep.store.tracks import SAFE_NAME, TrackFiles

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS live_segments (
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    speaker TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS final_timelines (
    session_id TEXT PRIMARY KEY REFERENCES sessions(session_id) ON DELETE CASCADE,
    timeline TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS voices (
    name TEXT PRIMARY KEY,
    embedding BLOB NOT NULL,
    speech_s REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_ended ON sessions(state, ended_at);
"""


class SqliteSessionStore(SessionStore):
    def __init__(self, data_dir: str | os.PathLike[str], mark_interrupted: bool = True) -> None:
        """``mark_interrupted`` False: open beside a running server (``rtsep enroll``), leaving its sessions be."""
        self.root = Path(data_dir)
        try:
            (self.root / "sessions").mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / "rtsep.sqlite3", check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store in {self.root}: {exc}") from exc
        self._lock = threading.Lock()
        self.tracks = TrackFiles(self.root / "sessions")
        if mark_interrupted:
            self._mark_interrupted()

    # --- helpers ---

    def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store error: {exc}") from exc

    def _mark_interrupted(self) -> None:
        for (info_json,) in self._run("SELECT info FROM sessions WHERE state = 'live'"):
            info = SessionInfo(**json.loads(info_json))
            info.state, info.outcome = "interrupted", "server_restart"
            try:
                self.update(info)
            except StoreError as exc:  # e.g. still no space left: serve what is there, retry next start
                log.error("cannot mark session %s interrupted: %s", info.session_id, exc, exc_info=True)

    # --- sessions ---

    def create(self, info: SessionInfo) -> None:
        self.tracks.create(info.session_id)
        self._run("INSERT INTO sessions (session_id, info, state, created_at, ended_at) VALUES (?, ?, ?, ?, ?)",
                  (info.session_id, json.dumps(dataclasses.asdict(info)), info.state, info.created_at, info.ended_at))

    def update(self, info: SessionInfo) -> None:
        self._run("UPDATE sessions SET info = ?, state = ?, ended_at = ? WHERE session_id = ?",
                  (json.dumps(dataclasses.asdict(info)), info.state, info.ended_at, info.session_id))

    def get(self, session_id: str) -> SessionInfo | None:
        if not SAFE_NAME.match(session_id):
            return None
        rows = self._run("SELECT info FROM sessions WHERE session_id = ?", (session_id,))
        return SessionInfo(**json.loads(rows[0][0])) if rows else None

    def all_sessions(self) -> list[SessionInfo]:
        return [SessionInfo(**json.loads(r[0])) for r in self._run("SELECT info FROM sessions ORDER BY created_at")]

    def ended_before(self, timestamp: float) -> list[str]:
        rows = self._run("SELECT session_id FROM sessions WHERE state != 'live' AND COALESCE(ended_at, created_at) < ?",
                         (timestamp,))
        return [r[0] for r in rows]

    def delete(self, session_id: str) -> None:
        self._run("DELETE FROM sessions WHERE session_id = ?", (session_id,))
        self.tracks.delete(session_id)

    # --- timelines ---

    def append_live_segment(self, session_id: str, speaker: str, start_s: float, end_s: float) -> None:
        self._run(
            "INSERT INTO live_segments (session_id, seq, speaker, start_s, end_s) VALUES "
            "(?, (SELECT COALESCE(MAX(seq), -1) + 1 FROM live_segments WHERE session_id = ?), ?, ?, ?)",
            (session_id, session_id, speaker, round(start_s, 3), round(end_s, 3)),
        )

    def live_segments(self, session_id: str) -> list[dict[str, Any]]:
        rows = self._run("SELECT speaker, start_s, end_s FROM live_segments WHERE session_id = ? ORDER BY seq",
                         (session_id,))
        return [{"speaker": s, "start_s": a, "end_s": b} for s, a, b in rows]

    def write_final(self, session_id: str, timeline: dict[str, Any]) -> None:
        self._run("INSERT OR REPLACE INTO final_timelines (session_id, timeline) VALUES (?, ?)",
                  (session_id, json.dumps(timeline)))

    def final_timeline(self, session_id: str) -> dict[str, Any] | None:
        rows = self._run("SELECT timeline FROM final_timelines WHERE session_id = ?", (session_id,))
        return json.loads(rows[0][0]) if rows else None

    # --- tracks ---

    def write_track(self, session_id: str, track: str, start_sample: int, samples: np.ndarray) -> None:
        self.tracks.write(session_id, track, start_sample, samples)

    def track_names(self, session_id: str) -> list[str]:
        return self.tracks.names(session_id)

    def read_track(self, session_id: str, track: str) -> np.ndarray | None:
        return self.tracks.read(session_id, track)

    def close_session(self, session_id: str) -> None:
        self.tracks.close(session_id)

    # --- voices ---

    def put_voice(self, voice: VoiceRecord, replace: bool = False) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        try:
            self._run(f"{verb} INTO voices (name, embedding, speech_s, created_at) VALUES (?, ?, ?, ?)",
                      (voice.name, voice_bytes(voice.embedding), float(voice.speech_s), float(voice.created_at)))
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise VoiceExists(f"a voice named {voice.name!r} is enrolled already") from None
            raise

    def get_voice(self, name: str) -> VoiceRecord | None:
        rows = self._run("SELECT name, embedding, speech_s, created_at FROM voices WHERE name = ?", (name,))
        return _voice(rows[0]) if rows else None

    def voices(self) -> list[VoiceRecord]:
        return [_voice(r) for r in self._run("SELECT name, embedding, speech_s, created_at FROM voices ORDER BY name")]

    def delete_voice(self, name: str) -> bool:
        with self._lock:
            try:
                return self._db.execute("DELETE FROM voices WHERE name = ?", (name,)).rowcount > 0
            except sqlite3.Error as exc:
                raise StoreError(f"store error: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _voice(row: tuple) -> VoiceRecord:
    name, embedding, speech_s, created_at = row
    return VoiceRecord(name, voice_from_bytes(embedding), float(speech_s), float(created_at))
