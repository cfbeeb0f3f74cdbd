"""The store contract: SQLite + files and PostgreSQL behave the same behind the SessionStore interface."""

import numpy as np
import pytest

from rtsep.errors import StoreError
from rtsep.sessions import hash_token
from rtsep.store.base import SessionInfo


def _info(sid="abc123", state="live", ended_at=None, created_at=1.0):
    return SessionInfo(sid, hash_token("tok"), created_at, state, "websocket", 48000, 16000, ended_at=ended_at)


def test_everything_written_survives_an_unclean_stop(backend):
    store = backend.open()
    store.create(_info())
    store.write_track("abc123", "SPEAKER_00", 2, np.array([0.5, 0.5], np.float32))
    store.write_track("abc123", "SPEAKER_00", 6, np.array([-0.5], np.float32))
    store.append_live_segment("abc123", "SPEAKER_00", 0.0, 1.25)
    store.append_live_segment("abc123", "SPEAKER_01", 1.25, 2.0)
    # no close(): the same replica starts again on the same storage, as after kill -9
    reopened = backend.open()
    info = reopened.get("abc123")
    assert info.state == "interrupted" and info.outcome == "server_restart"
    np.testing.assert_array_equal(reopened.read_track("abc123", "SPEAKER_00"), [0, 0, 16384, 16384, 0, 0, -16384])
    assert reopened.read_track("abc123", "SPEAKER_00").dtype == np.dtype("<i2")
    assert reopened.live_segments("abc123") == [
        {"speaker": "SPEAKER_00", "start_s": 0.0, "end_s": 1.25},
        {"speaker": "SPEAKER_01", "start_s": 1.25, "end_s": 2.0},
    ]
    assert reopened.track_names("abc123") == ["SPEAKER_00"]


def test_overlapping_writes_keep_what_was_written_and_append_the_rest(backend):
    store = backend.open()
    store.create(_info())
    store.write_track("abc123", "T", 0, np.full(4, 0.25, np.float32))
    store.write_track("abc123", "T", 2, np.full(4, -0.25, np.float32))  # 2 samples overlap, 2 are new
    store.write_track("abc123", "T", 1, np.full(2, 0.5, np.float32))  # entirely written already: dropped
    store.write_track("abc123", "T", 8, np.zeros(0, np.float32))  # empty, further on: silence up to it
    store.write_track("abc123", "U", 3, np.zeros(0, np.float32))  # a new track that starts with a gap
    np.testing.assert_array_equal(store.read_track("abc123", "T"), [8192] * 4 + [-8192] * 2 + [0, 0])
    np.testing.assert_array_equal(store.read_track("abc123", "U"), [0, 0, 0])
    assert store.track_names("abc123") == ["T", "U"]
    assert store.read_track("abc123", "V") is None


def test_clipping_and_rounding_of_samples(backend):
    store = backend.open()
    store.create(_info())
    store.write_track("abc123", "T", 0, np.array([2.0, -2.0, 1e-5, -0.999], np.float32))
    np.testing.assert_array_equal(store.read_track("abc123", "T"), [32767, -32768, 0, -32735])


def test_final_timeline_and_state(backend):
    store = backend.open()
    info = _info()
    store.create(info)
    store.write_final("abc123", {"segments": [1]})
    store.write_final("abc123", {"segments": [2], "speakers": ["b", "a"]})
    info.state, info.ended_at, info.outcome = "done", 5.0, "completed"
    info.speakers, info.duration_s = ["SPEAKER_00"], 4.5
    store.update(info)
    assert store.final_timeline("abc123") == {"segments": [2], "speakers": ["b", "a"]}
    assert store.final_timeline("nope") is None
    store.close()
    again = backend.open()
    assert again.get("abc123") == info
    assert [i.session_id for i in again.all_sessions()] == ["abc123"]


def test_a_session_is_created_once(backend):
    store = backend.open()
    store.create(_info())
    with pytest.raises(StoreError):
        store.create(_info())


def test_delete_removes_rows_and_audio(backend):
    store = backend.open()
    store.create(_info("old", "done", ended_at=10.0))
    store.create(_info("new", "done", ended_at=100.0, created_at=2.0))
    store.create(_info("never", "failed", created_at=3.0))  # never ended: its creation time counts
    store.create(_info("live", "live"))
    for sid in ("old", "new"):
        store.write_track(sid, "SPEAKER_00", 0, np.ones(4, np.float32) * 0.1)
        store.append_live_segment(sid, "SPEAKER_00", 0.0, 1.0)
        store.write_final(sid, {"segments": []})
    assert sorted(store.ended_before(50.0)) == ["never", "old"]
    assert "live" not in store.ended_before(1e12)
    store.delete("old")
    assert store.get("old") is None and store.final_timeline("old") is None and store.live_segments("old") == []
    assert store.read_track("old", "SPEAKER_00") is None and store.track_names("old") == []
    store.delete("old")  # deleting again (another replica's sweep got there first) is no error
    assert store.read_track("new", "SPEAKER_00") is not None and store.final_timeline("new") == {"segments": []}
    assert sorted(i.session_id for i in store.all_sessions()) == ["live", "never", "new"]


def test_unsafe_names_are_refused(backend):
    store = backend.open()
    assert store.get("../etc") is None
    store.create(_info())
    assert store.read_track("abc123", "../../rtsep") is None
    with pytest.raises(ValueError):
        store.write_track("abc123", "../x", 0, np.zeros(1, np.float32))
    with pytest.raises(ValueError):
        store.create(_info("../evil"))


def test_a_closed_session_keeps_its_data(backend):
    store = backend.open()
    store.create(_info())
    store.write_track("abc123", "T", 0, np.full(2, 0.5, np.float32))
    store.close_session("abc123")
    store.write_track("abc123", "T", 4, np.full(1, 0.5, np.float32))  # reopened: appends after what is there
    np.testing.assert_array_equal(store.read_track("abc123", "T"), [16384, 16384, 0, 0, 16384])


def test_final_live_and_input_tracks_live_side_by_side_and_go_with_the_session(backend):
    """The tracks of an ended session: the live ones as sent, the input, the final ones rendered from it (written
    in several chunks, as the driver writes them); all of them deleted with the session."""
    from rtsep.stream.render import INPUT_TRACK, final_track_name, track_kind

    store = backend.open()
    store.create(_info("abc123", "live"))
    store.write_track("abc123", "SPEAKER_00", 2, np.full(2, 0.5, np.float32))
    for start in range(0, 8, 4):
        store.write_track("abc123", INPUT_TRACK, start, np.full(4, 0.25, np.float32))
    final = np.array([0.0, 0.125, 0.25, 0.25, 0.25, 0.25, 0.125, 0.0], np.float32)
    for start in range(0, 8, 3):  # 3-sample chunks: the last one short
        store.write_track("abc123", final_track_name("SPEAKER_00"), start, final[start:start + 3])
    names = store.track_names("abc123")
    assert names == ["SPEAKER_00", "final-SPEAKER_00", "input"]
    assert [track_kind(n) for n in names] == ["live", "final", "input"]
    np.testing.assert_array_equal(store.read_track("abc123", "final-SPEAKER_00"), np.round(final * 32768))
    np.testing.assert_array_equal(store.read_track("abc123", "input"), [8192] * 8)
    np.testing.assert_array_equal(store.read_track("abc123", "SPEAKER_00"), [0, 0, 16384, 16384])
    store.delete("abc123")
    assert store.track_names("abc123") == [] and all(store.read_track("abc123", n) is None for n in names)


def _voice(name, seed=0, speech_s=4.5, created_at=7.0):
    from rtsep.store.base import VoiceRecord

    v = np.random.default_rng(seed).standard_normal(256).astype(np.float32)
    return VoiceRecord(name, v / np.linalg.norm(v), speech_s, created_at)


def test_voices_are_kept_by_name_until_deleted(backend):
    from rtsep.errors import VoiceExists

    store = backend.open()
    store.put_voice(_voice("bob", 1))
    store.put_voice(_voice("alice", 2, speech_s=3.25))
    with pytest.raises(VoiceExists, match="bob"):
        store.put_voice(_voice("bob", 3))
    np.testing.assert_array_equal(store.get_voice("bob").embedding, _voice("bob", 1).embedding)  # not replaced
    store.put_voice(_voice("bob", 3, created_at=9.0), replace=True)
    store.close()
    again = backend.open()
    bob = again.get_voice("bob")
    assert bob.embedding.dtype == np.float32 and bob.embedding.shape == (256,)
    np.testing.assert_array_equal(bob.embedding, _voice("bob", 3).embedding)
    assert (bob.speech_s, bob.created_at) == (4.5, 9.0)
    assert [v.name for v in again.voices()] == ["alice", "bob"]
    assert again.get_voice("alice").speech_s == 3.25 and again.get_voice("carol") is None
    assert again.delete_voice("bob") is True and again.delete_voice("bob") is False
    assert [v.name for v in again.voices()] == ["alice"]


def test_voices_are_not_session_data(backend):
    """Retention deletes sessions, never voices; deleting every session leaves the voices."""
    store = backend.open()
    store.put_voice(_voice("alice"))
    store.create(_info("old", "done", ended_at=1.0))
    for sid in store.ended_before(1e12):
        store.delete(sid)
    assert [v.name for v in store.voices()] == ["alice"]
