import sqlite3

import numpy as np
import pytest

from rtsep.sessions import hash_token
from rtsep.store.base import SessionInfo
from rtsep.store.sqlite import SqliteSessionStore


def _info(sid="abc123", state="live", ended_at=None):
    return SessionInfo(sid, hash_token("tok"), 1.0, state, "websocket", 48000, 16000, ended_at=ended_at)


def test_everything_written_survives_an_unclean_stop(tmp_path):
    store = SqliteSessionStore(tmp_path)
    store.create(_info())
    store.write_track("abc123", "SPEAKER_00", 2, np.array([0.5, 0.5], np.float32))
    store.write_track("abc123", "SPEAKER_00", 6, np.array([-0.5], np.float32))
    store.append_live_segment("abc123", "SPEAKER_00", 0.0, 1.25)
    store.append_live_segment("abc123", "SPEAKER_01", 1.25, 2.0)
    # no close(): a second process opens the same data dir, as after kill -9
    reopened = SqliteSessionStore(tmp_path)
    info = reopened.get("abc123")
    assert info.state == "interrupted" and info.outcome == "server_restart"
    np.testing.assert_array_equal(reopened.read_track("abc123", "SPEAKER_00"), [0, 0, 16384, 16384, 0, 0, -16384])
    assert reopened.live_segments("abc123") == [
        {"speaker": "SPEAKER_00", "start_s": 0.0, "end_s": 1.25},
        {"speaker": "SPEAKER_01", "start_s": 1.25, "end_s": 2.0},
    ]
    assert reopened.track_names("abc123") == ["SPEAKER_00"]
    journal = sqlite3.connect(tmp_path / "rtsep.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_final_timeline_and_state(tmp_path):
    store = SqliteSessionStore(tmp_path)
    info = _info()
    store.create(info)
    store.write_final("abc123", {"segments": [1]})
    store.write_final("abc123", {"segments": [2]})
    info.state, info.ended_at = "done", 5.0
    store.update(info)
    assert store.final_timeline("abc123") == {"segments": [2]}
    store.close()
    again = SqliteSessionStore(tmp_path)
    assert again.get("abc123").state == "done"
    assert [i.session_id for i in again.all_sessions()] == ["abc123"]


def test_delete_removes_rows_and_files(tmp_path):
    store = SqliteSessionStore(tmp_path)
    store.create(_info("old", "done", ended_at=10.0))
    store.create(_info("new", "done", ended_at=100.0))
    store.create(_info("live", "live"))
    for sid in ("old", "new"):
        store.write_track(sid, "SPEAKER_00", 0, np.ones(4, np.float32) * 0.1)
        store.append_live_segment(sid, "SPEAKER_00", 0.0, 1.0)
        store.write_final(sid, {"segments": []})
    assert store.ended_before(50.0) == ["old"]
    store.delete("old")
    assert store.get("old") is None and store.final_timeline("old") is None and store.live_segments("old") == []
    assert not (tmp_path / "sessions" / "old").exists()
    assert store.get("new") is not None and (tmp_path / "sessions" / "new").exists()
    assert "live" not in store.ended_before(1e12)


def test_unsafe_names_are_refused(tmp_path):
    store = SqliteSessionStore(tmp_path)
    assert store.get("../etc") is None
    store.create(_info())
    assert store.read_track("abc123", "../../rtsep") is None
    with pytest.raises(ValueError):
        store.write_track("abc123", "../x", 0, np.zeros(1, np.float32))
