import json

import numpy as np
import pytest

from rtsep.sessions import hash_token
from rtsep.store.base import SessionInfo
from rtsep.store.files import FileSessionStore


def _info(sid="abc123", state="live"):
    return SessionInfo(sid, hash_token("tok"), 1.0, state, "websocket", 48000, 16000)


def test_tracks_are_filled_with_silence_and_survive_reopen(tmp_path):
    store = FileSessionStore(tmp_path)
    store.create(_info())
    store.write_track("abc123", "SPEAKER_00", 2, np.array([0.5, 0.5], np.float32))
    store.write_track("abc123", "SPEAKER_00", 6, np.array([-0.5], np.float32))
    store.append_live_segment("abc123", "SPEAKER_00", 0.0, 1.25)
    # simulate a crash: no close, a torn last line in the live timeline
    with open(tmp_path / "sessions" / "abc123" / "live.jsonl", "a") as f:
        f.write('{"speaker": "SPEAK')
    reopened = FileSessionStore(tmp_path)
    info = reopened.get("abc123")
    assert info.state == "interrupted" and info.outcome == "server_restart"
    np.testing.assert_array_equal(reopened.read_track("abc123", "SPEAKER_00"), [0, 0, 16384, 16384, 0, 0, -16384])
    assert reopened.live_segments("abc123") == [{"speaker": "SPEAKER_00", "start_s": 0.0, "end_s": 1.25}]
    assert reopened.track_names("abc123") == ["SPEAKER_00"]


def test_final_timeline_and_meta_are_replaced_atomically(tmp_path):
    store = FileSessionStore(tmp_path)
    info = _info()
    store.create(info)
    store.write_final("abc123", {"segments": [1]})
    store.write_final("abc123", {"segments": [2]})
    info.state = "done"
    store.update(info)
    assert store.final_timeline("abc123") == {"segments": [2]}
    assert json.loads((tmp_path / "sessions" / "abc123" / "meta.json").read_text())["state"] == "done"
    assert not list((tmp_path / "sessions" / "abc123").glob("*.tmp"))
    assert FileSessionStore(tmp_path).get("abc123").state == "done"


def test_unsafe_names_are_refused(tmp_path):
    store = FileSessionStore(tmp_path)
    assert store.get("../etc") is None
    store.create(_info())
    assert store.read_track("abc123", "../../meta") is None
    with pytest.raises(ValueError):
        store.write_track("abc123", "../x", 0, np.zeros(1, np.float32))
