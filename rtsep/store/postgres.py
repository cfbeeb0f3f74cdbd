"""The shared store for several replicas: PostgreSQL (psycopg 3, a connection pool) for sessions, live
segments, final timelines and track audio (one row per write, int16 PCM, appended as produced).

Every write is its own transaction, committed (synchronous_commit as the server has it, ``on`` by default)
before the call returns: what a replica acknowledged to a client is in the database even if the replica is
killed the next instant.

Ownership: a live session belongs to the replica that created it (``sessions.owner``). Each replica renews a
lease row (``replicas.expires_at``, in the database's clock) from a background thread; the same thread marks
``interrupted`` the live sessions of every other replica whose lease has expired (it died), so any replica then
serves them as they were at their last write. A replica restarted with the same id marks its own former live
sessions at start, as the SQLite store does. Deletion is a conditional ``DELETE`` (cascading to every row of
the session, audio included): replicas sweeping retention at the same time delete each session once, the
others find nothing to delete.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rtsep.audio import float_to_s16
from rtsep.errors import SessionDeleted, StoreError, VoiceExists
from rtsep.store.base import SessionInfo, SessionStore, VoiceRecord, voice_bytes, voice_from_bytes
from rtsep.store.tracks import SAFE_NAME, check_name

log = logging.getLogger(__name__)

# Each migration brings the schema from version i to i + 1; they run at start under an advisory lock, so
# replicas starting together migrate once. Never edit a released migration: append one.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE replicas (
            replica_id TEXT PRIMARY KEY,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            expires_at TIMESTAMPTZ NOT NULL)""",
        """CREATE TABLE sessions (
            session_id TEXT PRIMARY KEY,
            info JSONB NOT NULL,
            state TEXT NOT NULL,
            owner TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION)""",
        "CREATE INDEX sessions_ended ON sessions (state, ended_at)",
        "CREATE INDEX sessions_live_owner ON sessions (owner) WHERE state = 'live'",
        """CREATE TABLE live_segments (
            id BIGSERIAL PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
            speaker TEXT NOT NULL,
            start_s DOUBLE PRECISION NOT NULL,
            end_s DOUBLE PRECISION NOT NULL)""",
        "CREATE INDEX live_segments_session ON live_segments (session_id, id)",
        """CREATE TABLE final_timelines (
            session_id TEXT PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
            timeline TEXT NOT NULL)""",
        """CREATE TABLE track_chunks (
            id BIGSERIAL PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
            track TEXT NOT NULL,
            start_sample BIGINT NOT NULL,
            n_samples INTEGER NOT NULL,
            pcm BYTEA NOT NULL)""",
        "CREATE INDEX track_chunks_track ON track_chunks (session_id, track, start_sample)",
    ],
    [  # 2: enrolled voices (named speakers): embeddings only, not session data (retention keeps them)
        """CREATE TABLE voices (
            name TEXT PRIMARY KEY,
            embedding BYTEA NOT NULL,
            speech_s DOUBLE PRECISION NOT NULL,
            created_at DOUBLE PRECISION NOT NULL)""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
MIGRATION_LOCK_KEY = 0x72747365_70000001  # pg_advisory_xact_lock key: "rtsep" + 1

# a live session whose owner holds no unexpired lease: interrupted (its data up to the last write stays)
_INTERRUPT = """
UPDATE sessions SET state = 'interrupted', ended_at = EXTRACT(EPOCH FROM now()),
    info = info || jsonb_build_object('state', 'interrupted', 'outcome', %(outcome)s::text,
                                      'ended_at', EXTRACT(EPOCH FROM now()))
WHERE state = 'live' AND {condition}
RETURNING session_id
"""


def default_replica_id() -> str:
    """Host name (a pod's name in Kubernetes), process id and a random suffix: unique per process."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def redact_dsn(dsn: str) -> str:
    """The URL without its password, for logs and error messages."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by the connection itself
        return "<unparsable PostgreSQL URL>"
    return f"postgresql://{parts.get('user', '')}@{parts.get('host', '')}:{parts.get('port', '5432')}/" \
           f"{parts.get('dbname', '')}"


class PostgresSessionStore(SessionStore):
    """``lease_s``: how long a replica's lease lasts after each renewal; renewed every ``renew_s`` (default
    a third of it). ``background=False`` runs no thread: the caller (a test) calls ``renew_lease`` and
    ``reclaim_expired`` itself."""

    def __init__(self, dsn: str, *, replica_id: str | None = None, lease_s: float = 10.0,
                 renew_s: float | None = None, background: bool = True, pool_size: int = 4,
                 connect_timeout_s: float = 10.0) -> None:
        from psycopg_pool import ConnectionPool, PoolTimeout

        if lease_s < 0:
            raise StoreError(f"the lease must not be negative, got {lease_s} s")
        self.replica_id = replica_id or default_replica_id()
        self.lease_s = float(lease_s)
        self.renew_s = renew_s if renew_s is not None else max(self.lease_s / 3, 0.05)
        self.where = redact_dsn(dsn)
        self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, kwargs={"autocommit": True},
                                    open=False, name=f"rtsep-{self.replica_id}")
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot reach PostgreSQL at {self.where} within {connect_timeout_s:.0f} s "
                             "(is it running, and are the user, database and password right?)") from exc
        self._track_lock = threading.Lock()
        self._track_ends: dict[tuple[str, str], int] = {}  # end sample of each track this replica writes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self.migrate()
            self.renew_lease()
            self.mark_own_interrupted("server_restart")
        except BaseException:
            self._pool.close()
            raise
        if background:
            self._thread = threading.Thread(target=self._lease_loop, name=f"rtsep-lease-{self.replica_id}",
                                            daemon=True)
            self._thread.start()

    # --- helpers ---

    def _run(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple]:
        import psycopg

        try:
            with self._pool.connection() as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
        except psycopg.errors.ForeignKeyViolation as exc:
            # a write for a session that another replica deleted (DELETE through it while the session is live
            # here): the session ends as a deletion on its own replica does (4410), and nothing is re-created
            raise SessionDeleted("the session was deleted by its owner (through another replica)") from exc
        except psycopg.Error as exc:
            raise StoreError(f"store error ({self.where}): {exc}") from exc

    def _transaction(self, work: Callable[[Any], Any]) -> Any:
        import psycopg

        try:
            with self._pool.connection() as conn, conn.transaction():
                return work(conn)
        except psycopg.Error as exc:
            raise StoreError(f"store error ({self.where}): {exc}") from exc

    # --- schema ---

    def schema_version(self) -> int:
        rows = self._run("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    def migrate(self) -> None:
        def work(conn: Any) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise StoreError(f"the database at {self.where} has schema version {current}, newer than this "
                                 f"rtsep knows ({SCHEMA_VERSION}): upgrade rtsep")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                log.info("store %s: schema migrated to version %d", self.where, version)

        self._transaction(work)

    # --- ownership ---

    def renew_lease(self) -> None:
        self._run("INSERT INTO replicas (replica_id, expires_at) VALUES (%s, now() + make_interval(secs => %s)) "
                  "ON CONFLICT (replica_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                  (self.replica_id, self.lease_s))

    def mark_own_interrupted(self, outcome: str) -> list[str]:
        """This replica's live sessions (of an earlier process with the same id, or at shutdown)."""
        rows = self._run(_INTERRUPT.format(condition="owner = %(me)s"), {"outcome": outcome, "me": self.replica_id})
        return [r[0] for r in rows]

    def reclaim_expired(self) -> list[str]:
        """Marks ``interrupted`` the live sessions of every other replica without an unexpired lease and
        forgets the expired leases; returns the ids of the sessions it marked."""

        def work(conn: Any) -> list[str]:
            rows = conn.execute(
                _INTERRUPT.format(condition="owner <> %(me)s AND owner NOT IN "
                                            "(SELECT replica_id FROM replicas WHERE expires_at > now())"),
                {"outcome": "replica_lost", "me": self.replica_id},
            ).fetchall()
            conn.execute("DELETE FROM replicas WHERE expires_at <= now() AND replica_id <> %s", (self.replica_id,))
            return [r[0] for r in rows]

        sessions = self._transaction(work)
        if sessions:
            log.warning("store: %d session(s) of a lost replica marked interrupted: %s", len(sessions),
                        ", ".join(sessions))
        return sessions

    def _lease_loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew_lease()
                self.reclaim_expired()
            except Exception:  # noqa: BLE001 - the database may be back at the next round
                log.exception("store: renewing the lease of replica %s failed", self.replica_id)

    # --- sessions ---

    def create(self, info: SessionInfo) -> None:
        check_name(info.session_id)
        self._run("INSERT INTO sessions (session_id, info, state, owner, created_at, ended_at) "
                  "VALUES (%s, %s::jsonb, %s, %s, %s, %s)",
                  (info.session_id, _info_json(info), info.state, self.replica_id, info.created_at, info.ended_at))

    def update(self, info: SessionInfo) -> None:
        # a session declared interrupted (its replica lost its lease) never turns live again
        self._run("UPDATE sessions SET info = %s::jsonb, state = %s, ended_at = %s "
                  "WHERE session_id = %s AND NOT (state = 'interrupted' AND %s = 'live')",
                  (_info_json(info), info.state, info.ended_at, info.session_id, info.state))

    def get(self, session_id: str) -> SessionInfo | None:
        if not SAFE_NAME.match(session_id):
            return None
        rows = self._run("SELECT info FROM sessions WHERE session_id = %s", (session_id,))
        return SessionInfo(**rows[0][0]) if rows else None

    def owner(self, session_id: str) -> str | None:
        """The replica that created the session (for operators and tests)."""
        rows = self._run("SELECT owner FROM sessions WHERE session_id = %s", (session_id,))
        return rows[0][0] if rows else None

    def all_sessions(self) -> list[SessionInfo]:
        return [SessionInfo(**r[0]) for r in self._run("SELECT info FROM sessions ORDER BY created_at")]

    def ended_before(self, timestamp: float) -> list[str]:
        rows = self._run("SELECT session_id FROM sessions WHERE state <> 'live' "
                         "AND COALESCE(ended_at, created_at) < %s ORDER BY created_at", (timestamp,))
        return [r[0] for r in rows]

    def delete(self, session_id: str) -> None:
        # conditional and idempotent: of replicas deleting the same session at once, one deletes, the others
        # find nothing; the foreign keys cascade to segments, timeline and audio, leaving no orphan row
        self._run("DELETE FROM sessions WHERE session_id = %s", (session_id,))
        with self._track_lock:
            for key in [k for k in self._track_ends if k[0] == session_id]:
                del self._track_ends[key]

    # --- timelines ---

    def append_live_segment(self, session_id: str, speaker: str, start_s: float, end_s: float) -> None:
        self._run("INSERT INTO live_segments (session_id, speaker, start_s, end_s) VALUES (%s, %s, %s, %s)",
                  (session_id, speaker, round(start_s, 3), round(end_s, 3)))

    def live_segments(self, session_id: str) -> list[dict[str, Any]]:
        rows = self._run("SELECT speaker, start_s, end_s FROM live_segments WHERE session_id = %s ORDER BY id",
                         (session_id,))
        return [{"speaker": s, "start_s": a, "end_s": b} for s, a, b in rows]

    def write_final(self, session_id: str, timeline: dict[str, Any]) -> None:
        self._run("INSERT INTO final_timelines (session_id, timeline) VALUES (%s, %s) "
                  "ON CONFLICT (session_id) DO UPDATE SET timeline = EXCLUDED.timeline",
                  (session_id, json.dumps(timeline)))

    def final_timeline(self, session_id: str) -> dict[str, Any] | None:
        rows = self._run("SELECT timeline FROM final_timelines WHERE session_id = %s", (session_id,))
        return json.loads(rows[0][0]) if rows else None

    # --- tracks ---

    def write_track(self, session_id: str, track: str, start_sample: int, samples: np.ndarray) -> None:
        """Appends one chunk; as with the track files, a gap before it reads as silence and the part of it
        that overlaps what was already written is dropped."""
        key = (check_name(session_id), check_name(track))
        with self._track_lock:
            end = self._track_ends.get(key)
            if end is None:
                rows = self._run("SELECT MAX(start_sample + n_samples) FROM track_chunks "
                                 "WHERE session_id = %s AND track = %s", key)
                end = rows[0][0]
            new_track = end is None
            position = 0 if end is None else int(end)
            if start_sample < position:
                samples = samples[position - start_sample:]
                start_sample = position
            if samples.size or start_sample > position or new_track:
                pcm = float_to_s16(samples).astype("<i2").tobytes()
                self._run("INSERT INTO track_chunks (session_id, track, start_sample, n_samples, pcm) "
                          "VALUES (%s, %s, %s, %s, %s)", (*key, int(start_sample), int(samples.size), pcm))
                position = int(start_sample) + int(samples.size)
            self._track_ends[key] = position

    def track_names(self, session_id: str) -> list[str]:
        rows = self._run("SELECT DISTINCT track FROM track_chunks WHERE session_id = %s ORDER BY track",
                         (session_id,))
        return [r[0] for r in rows]

    def read_track(self, session_id: str, track: str) -> np.ndarray | None:
        if not (SAFE_NAME.match(session_id) and SAFE_NAME.match(track)):
            return None
        rows = self._run("SELECT start_sample, n_samples, pcm FROM track_chunks "
                         "WHERE session_id = %s AND track = %s ORDER BY start_sample, id", (session_id, track))
        if not rows:
            return None
        out = np.zeros(max(start + n for start, n, _ in rows), "<i2")
        for start, n, pcm in rows:
            out[start:start + n] = np.frombuffer(pcm, "<i2", count=n)
        return out

    def close_session(self, session_id: str) -> None:
        with self._track_lock:
            for key in [k for k in self._track_ends if k[0] == session_id]:
                del self._track_ends[key]

    # --- voices ---

    def put_voice(self, voice: VoiceRecord, replace: bool = False) -> None:
        conflict = ("ON CONFLICT (name) DO UPDATE SET embedding = EXCLUDED.embedding, speech_s = EXCLUDED.speech_s, "
                    "created_at = EXCLUDED.created_at" if replace else "ON CONFLICT (name) DO NOTHING")
        rows = self._run(f"INSERT INTO voices (name, embedding, speech_s, created_at) VALUES (%s, %s, %s, %s) "
                         f"{conflict} RETURNING name",
                         (voice.name, voice_bytes(voice.embedding), float(voice.speech_s), float(voice.created_at)))
        if not rows:
            raise VoiceExists(f"a voice named {voice.name!r} is enrolled already")

    def get_voice(self, name: str) -> VoiceRecord | None:
        rows = self._run("SELECT name, embedding, speech_s, created_at FROM voices WHERE name = %s", (name,))
        return _voice(rows[0]) if rows else None

    def voices(self) -> list[VoiceRecord]:
        return [_voice(r) for r in self._run("SELECT name, embedding, speech_s, created_at FROM voices "
                                                "ORDER BY name COLLATE \"C\"")]

    def delete_voice(self, name: str) -> bool:
        return bool(self._run("DELETE FROM voices WHERE name = %s RETURNING name", (name,)))

    def close(self) -> None:
        """Stops renewing, marks this replica's sessions still live as interrupted and gives up its lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(self.renew_s * 2, 5.0))
        try:
            self.mark_own_interrupted("server_shutdown")
            self._run("DELETE FROM replicas WHERE replica_id = %s", (self.replica_id,))
        except StoreError:
            log.exception("store: could not give up the lease of replica %s", self.replica_id)
        finally:
            self._pool.close()


def _info_json(info: SessionInfo) -> str:
    import dataclasses

    return json.dumps(dataclasses.asdict(info))


def _voice(row: tuple) -> VoiceRecord:
    name, embedding, speech_s, created_at = row
    return VoiceRecord(name, voice_from_bytes(bytes(embedding)), float(speech_s), float(created_at))
