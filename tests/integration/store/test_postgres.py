"""What only the shared store does: schema versions, replica leases and failover, concurrent retention."""

import threading

import numpy as np
import psycopg
import pytest

from rtsep.errors import SessionDeleted, StoreError
from rtsep.sessions import hash_token
from rtsep.store.base import SessionInfo
from rtsep.store.postgres import SCHEMA_VERSION, PostgresSessionStore


def _info(sid, state="live", ended_at=None):
    return SessionInfo(sid, hash_token("tok"), 1.0, state, "websocket", 48000, 16000, ended_at=ended_at)


@pytest.fixture
def url(postgres):
    return postgres.create_database()


@pytest.fixture
def replicas(url):
    opened = []

    def open_replica(replica_id, **kwargs):
        kwargs.setdefault("background", False)
        store = PostgresSessionStore(url, replica_id=replica_id, **kwargs)
        opened.append(store)
        return store

    yield open_replica
    for store in opened:
        store.close()


def _count(url, sql, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()[0]


def test_the_schema_is_created_once_and_its_version_recorded(url, replicas):
    barrier = threading.Barrier(3)
    errors = []

    def start(name):
        barrier.wait()
        try:
            replicas(name)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(f"r{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert replicas("r3").schema_version() == SCHEMA_VERSION
    assert _count(url, "SELECT count(*) FROM schema_version") == SCHEMA_VERSION  # migrated once, not 3 times


def test_a_newer_schema_is_refused(url, replicas):
    replicas("a")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        replicas("b")


def test_an_unreachable_database_is_a_clear_error(postgres):
    with pytest.raises(StoreError, match="cannot reach PostgreSQL") as exc:
        PostgresSessionStore("postgresql://rtsep:secret@127.0.0.1:1/nope", connect_timeout_s=1)
    assert "secret" not in str(exc.value)


def test_sessions_of_a_replica_whose_lease_expired_are_interrupted_and_served(url, replicas):
    dead = replicas("dead", lease_s=0)  # its lease has expired as soon as it was written: a replica gone silent
    alive = replicas("alive", lease_s=60)
    dead.create(_info("s1"))
    dead.create(_info("s2", "done", ended_at=5.0))
    dead.write_track("s1", "SPEAKER_00", 0, np.full(3, 0.5, np.float32))
    dead.append_live_segment("s1", "SPEAKER_00", 0.0, 0.5)
    alive.create(_info("mine"))

    assert alive.reclaim_expired() == ["s1"]
    info = alive.get("s1")
    assert (info.state, info.outcome) == ("interrupted", "replica_lost") and info.ended_at is not None
    np.testing.assert_array_equal(alive.read_track("s1", "SPEAKER_00"), [16384] * 3)
    assert alive.live_segments("s1") == [{"speaker": "SPEAKER_00", "start_s": 0.0, "end_s": 0.5}]
    assert alive.get("s2").state == "done" and alive.get("mine").state == "live"
    assert alive.reclaim_expired() == []  # once
    assert _count(url, "SELECT count(*) FROM replicas WHERE replica_id = 'dead'") == 0
    # the lost replica comes back to life and writes its old state: the session stays interrupted
    stale = dead.get("s1")
    stale.state, stale.outcome = "live", None
    dead.update(stale)
    assert alive.get("s1").state == "interrupted"


def test_a_replica_that_renews_its_lease_keeps_its_sessions(replicas):
    owner = replicas("owner", lease_s=60)
    other = replicas("other", lease_s=60)
    owner.create(_info("s1"))
    assert other.reclaim_expired() == [] and other.get("s1").state == "live"
    assert owner.reclaim_expired() == []  # a replica never reclaims its own sessions


def test_the_lease_threads_detect_a_dead_replica(url):
    """With the background threads running: a replica stops renewing (as a killed one does) and the survivor's
    thread marks its session interrupted once the short lease has run out."""
    victim = PostgresSessionStore(url, replica_id="victim", lease_s=0.3, renew_s=0.05)
    survivor = PostgresSessionStore(url, replica_id="survivor", lease_s=60, renew_s=0.05)
    try:
        victim.create(_info("s1"))
        victim.append_live_segment("s1", "SPEAKER_00", 0.0, 0.5)
        victim._stop.set()  # its lease thread ends, nothing else is done: no close, no cleanup
        victim._thread.join()
        # the database has no event to wait on: poll it (paced, bounded; the bound is not what is tested)
        pace = threading.Event()
        for _ in range(600):
            if survivor.get("s1").state == "interrupted":
                break
            pace.wait(0.05)
        else:
            pytest.fail("the survivor never marked the session of the dead replica interrupted")
        assert survivor.get("s1").outcome == "replica_lost"
        assert survivor.live_segments("s1") == [{"speaker": "SPEAKER_00", "start_s": 0.0, "end_s": 0.5}]
    finally:
        survivor.close()
        victim._pool.close()


def test_close_gives_up_the_lease_and_interrupts_what_is_still_live(url, replicas):
    store = PostgresSessionStore(url, replica_id="leaving", background=False)
    store.create(_info("s1"))
    store.close()
    assert _count(url, "SELECT count(*) FROM replicas WHERE replica_id = 'leaving'") == 0
    info = replicas("next").get("s1")
    assert (info.state, info.outcome) == ("interrupted", "server_shutdown")


def test_retention_on_every_replica_deletes_each_session_once_and_leaves_no_orphan(url, replicas):
    stores = [replicas(f"r{i}") for i in range(3)]
    ids = [f"old{i}" for i in range(6)]
    for sid in ids:
        stores[0].create(_info(sid, "done", ended_at=10.0))
        stores[0].write_track(sid, "SPEAKER_00", 0, np.ones(160, np.float32) * 0.1)
        stores[0].write_track(sid, "SPEAKER_00", 160, np.ones(160, np.float32) * 0.1)
        stores[0].append_live_segment(sid, "SPEAKER_00", 0.0, 1.0)
        stores[0].write_final(sid, {"segments": []})
    stores[0].create(_info("keep", "done", ended_at=1e12))
    stores[0].write_track("keep", "SPEAKER_00", 0, np.ones(4, np.float32) * 0.1)
    barrier = threading.Barrier(len(stores))
    errors = []

    def sweep(store):
        barrier.wait()
        try:
            for sid in store.ended_before(100.0):
                store.delete(sid)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for table in ("sessions", "live_segments", "final_timelines", "track_chunks"):
        assert _count(url, f"SELECT count(*) FROM {table} WHERE session_id <> 'keep'") == 0, table
    assert _count(url, "SELECT count(*) FROM track_chunks WHERE session_id = 'keep'") == 1


def test_an_acknowledged_write_is_committed(url, replicas):
    store = replicas("a")
    store.create(_info("s1"))
    store.append_live_segment("s1", "SPEAKER_00", 0.0, 0.5)
    store.write_track("s1", "SPEAKER_00", 0, np.ones(8, np.float32) * 0.1)
    # another connection, no transaction of ours open: what returned is visible (committed), not pending
    assert _count(url, "SELECT count(*) FROM live_segments WHERE session_id = 's1'") == 1
    assert _count(url, "SELECT sum(n_samples) FROM track_chunks WHERE session_id = 's1'") == 8


def test_writes_for_a_session_deleted_through_another_replica_end_it(url, replicas):
    owner, other = replicas("owner"), replicas("other")
    owner.create(_info("s1"))
    owner.write_track("s1", "SPEAKER_00", 0, np.ones(4, np.float32) * 0.1)
    other.delete("s1")  # DELETE /v1/sessions/s1 answered by the other replica while s1 is live on its owner
    with pytest.raises(SessionDeleted):
        owner.write_track("s1", "SPEAKER_00", 4, np.ones(4, np.float32) * 0.1)
    with pytest.raises(SessionDeleted):
        owner.append_live_segment("s1", "SPEAKER_00", 0.0, 0.5)
    owner.update(_info("s1", "failed", ended_at=2.0))  # the owner's end-of-session update finds nothing
    for table in ("sessions", "live_segments", "track_chunks"):
        assert _count(url, f"SELECT count(*) FROM {table} WHERE session_id = 's1'") == 0, table


def test_a_version_1_database_is_migrated_to_hold_voices_and_keeps_its_sessions(url, replicas):
    from rtsep.store.base import VoiceRecord
    from rtsep.store.postgres import MIGRATIONS

    with psycopg.connect(url, autocommit=True) as conn:  # the schema as rtsep wrote it before voices existed
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute("INSERT INTO sessions (session_id, info, state, owner, created_at) VALUES "
                     "('old', %s::jsonb, 'done', 'gone', 1.0)", (_info_json(_info("old", "done")),))
    store = replicas("a")
    assert SCHEMA_VERSION >= 2 and store.schema_version() == SCHEMA_VERSION
    assert store.get("old").state == "done"
    store.put_voice(VoiceRecord("alice", np.ones(4, np.float32) / 2, 3.0, 1.0))
    assert [v.name for v in store.voices()] == ["alice"]


def _info_json(info):
    import dataclasses
    import json

    return json.dumps(dataclasses.asdict(info))
