"""A real PostgreSQL for tests and benchmarks: Debian's binaries, ``initdb`` + ``pg_ctl`` in a temporary
folder, listening on 127.0.0.1 at a free port; trust authentication for one superuser, ``rtsep``."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<major>/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int
    _as_user: list[str]
    _databases: count = field(default_factory=count)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://rtsep@127.0.0.1:{self.port}/{database}"

    def _pg(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as_user, *args], check=True, capture_output=True, text=True, **kwargs)

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"{prefix}{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def run_postgres(bin_dir: Path | None = None) -> Iterator[PostgresServer]:
    bin_dir = bin_dir or postgres_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL binaries (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="rtsep-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as Debian's postgres user
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    server = PostgresServer(bin_dir, root, port, as_user)
    data, log = root / "data", root / "server.log"
    try:
        server._pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "rtsep", "--auth=trust", "-E", "UTF8",
                   "--no-instructions")
        server._pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start", "-o",
                   f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   "-c shared_buffers=32MB")
    except subprocess.CalledProcessError as exc:
        detail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{detail}") from exc
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server._pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
