"""Sessions, timelines and track files, persisted as they are produced."""

from rtsep.store.base import SessionInfo, SessionStore
from rtsep.store.files import FileSessionStore

__all__ = ["FileSessionStore", "SessionInfo", "SessionStore"]
