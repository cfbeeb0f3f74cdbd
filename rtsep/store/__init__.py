"""Sessions, timelines and track files, persisted as they are produced."""

from rtsep.store.base import SessionInfo, SessionStore
from rtsep.store.sqlite import SqliteSessionStore

__all__ = ["SessionInfo", "SessionStore", "SqliteSessionStore"]
