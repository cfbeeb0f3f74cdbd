"""What only the SQLite + files store does (the shared behaviour is in tests/integration/store)."""

import sqlite3

import numpy as np

from rtsep.sessions import hash_token
from rtsep.store.base import SessionInfo
from rtsep.store.sqlite import SqliteSessionStore


def _info(sid="abc123", state="live", ended_at=None):
    return SessionInfo(sid, hash_token("tok"), 1.0, state, "websocket", 48000, 16000, ended_at=ended_at)


def test_the_database_is_in_wal_mode(tmp_path):
    SqliteSessionStore(tmp_path).create(_info())
    journal = sqlite3.connect(tmp_path / "rtsep.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_delete_removes_the_track_files(tmp_path):
    store = SqliteSessionStore(tmp_path)
    for sid in ("old", "new"):
        store.create(_info(sid, "done", ended_at=10.0))
        store.write_track(sid, "SPEAKER_00", 0, np.ones(4, np.float32) * 0.1)
    store.delete("old")
    assert not (tmp_path / "sessions" / "old").exists()
    assert (tmp_path / "sessions" / "new" / "tracks" / "SPEAKER_00.pcm").stat().st_size == 8


def test_the_voice_store_opened_beside_a_running_server_leaves_its_live_sessions_live(tmp_path):
    from rtsep.store.base import VoiceRecord
    from rtsep.store.factory import StoreLocation, open_voice_store

    server = SqliteSessionStore(tmp_path)
    server.create(SessionInfo("live1", hash_token("t"), 1.0, "live", "websocket", 16000, 16000))
    cli = open_voice_store(StoreLocation("sqlite", str(tmp_path)))  # rtsep enroll while rtsep serve runs
    cli.put_voice(VoiceRecord("alice", np.ones(4, np.float32) / 2, 3.0, 1.0))
    cli.close()
    assert server.get("live1").state == "live" and [v.name for v in server.voices()] == ["alice"]
    server.close()
    assert SqliteSessionStore(tmp_path).get("live1").state == "interrupted"  # a server restart still marks it
