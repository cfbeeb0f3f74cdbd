"""Which store a server uses: ``--store URL`` parsed once, opened once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from rtsep.errors import ConfigError
from rtsep.store.base import SessionStore


@dataclass(frozen=True)
class StoreLocation:
    kind: str  # "sqlite" (a data dir: SQLite database + track files) | "postgresql"
    target: str  # sqlite: the data dir; postgresql: the connection URL as given

    def describe(self) -> str:
        """For logs: never the password."""
        if self.kind == "sqlite":
            return f"sqlite data dir {self.target}"
        from rtsep.store.postgres import redact_dsn

        return redact_dsn(self.target)


def parse_store_url(url: str, data_dir: str) -> StoreLocation:
    """``sqlite://PATH`` (``sqlite:///abs/path``; an empty URL means the data dir) or
    ``postgresql://USER[:PASSWORD]@HOST:PORT/DB[?options]`` (``postgres://`` too)."""
    text = (url or "").strip()
    if not text:
        return StoreLocation("sqlite", data_dir)
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if sep and scheme == "sqlite":
        if not rest:
            raise ConfigError(f"store URL {url!r} names no directory: use sqlite:///path/to/data-dir")
        return StoreLocation("sqlite", rest)
    if sep and scheme in ("postgresql", "postgres"):
        if not rest or rest.startswith("/"):
            raise ConfigError(f"store URL {url!r} names no host: use postgresql://USER@HOST:PORT/DB")
        return StoreLocation("postgresql", text)
    raise ConfigError(f"unknown store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


def open_store(location: StoreLocation, *, replica_id: str = "", lease_s: float = 10.0) -> SessionStore:
    if location.kind == "sqlite":
        from rtsep.store.sqlite import SqliteSessionStore

        return SqliteSessionStore(location.target)
    try:
        from rtsep.store.postgres import PostgresSessionStore
    except ImportError as exc:  # psycopg is a dependency; this catches a broken install
        raise ConfigError(f"the PostgreSQL store needs psycopg 3 and psycopg_pool: {exc}") from exc
    return PostgresSessionStore(location.target, replica_id=replica_id or None, lease_s=lease_s)


def open_voice_store(location: StoreLocation) -> SessionStore:
    """The store for enrolled voices alone (``rtsep enroll`` / ``voices`` / ``process --voices``), opened beside a
    server that may be running on it: SQLite does not mark that server's live sessions interrupted; PostgreSQL runs
    no lease thread (a short-lived replica of its own id, whose lease it gives up on close)."""
    if location.kind == "sqlite":
        from rtsep.store.sqlite import SqliteSessionStore

        return SqliteSessionStore(location.target, mark_interrupted=False)
    try:
        from rtsep.store.postgres import PostgresSessionStore
    except ImportError as exc:
        raise ConfigError(f"the PostgreSQL store needs psycopg 3 and psycopg_pool: {exc}") from exc
    return PostgresSessionStore(location.target, background=False)
