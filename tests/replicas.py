"""Real `rtsep serve` replicas on a shared store and a real nginx in front of them (tests and benchmarks)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.postgres import free_port

RTSEP = [sys.executable, "-m", "rtsep"]


@dataclass
class Replica:
    replica_id: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def wait_healthy(port: int, proc: subprocess.Popen, log_path: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}): {log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # nothing to wait on but the port itself
    proc.kill()
    raise RuntimeError(f"not healthy within {timeout_s:.0f} s: {log_path.read_text(errors='replace')[-3000:]}")


def start_replica(folder: Path, store_url: str, replica_id: str, *extra: str) -> Replica:
    """``rtsep serve`` on a free port with ``--store store_url``, healthy when this returns."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = folder / f"{replica_id}.log"
    with open(log_path, "wb") as log:  # a file, never an unread pipe
        proc = subprocess.Popen(
            RTSEP + ["serve", "--port", str(port), "--store", store_url, "--replica-id", replica_id,
                     "--data-dir", str(folder / replica_id), "--log-level", "warning", *extra],
            stdout=log, stderr=subprocess.STDOUT,
        )
    wait_healthy(port, proc, log_path)
    return Replica(replica_id, port, proc, log_path)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format upstream '$request_method $uri $status $upstream_addr';
    access_log {prefix}/access.log upstream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream rtsep {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://rtsep;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            proxy_max_temp_file_size 0;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


@dataclass
class Proxy:
    port: int
    prefix: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def upstreams(self, path_prefix: str) -> list[str]:
        """The upstream that answered each logged request whose path starts with ``path_prefix`` (the last one
        tried: nginx passes a request on when a replica refuses the connection)."""
        lines = (self.prefix / "access.log").read_text().splitlines()
        return [line.split(" ", 3)[3].split(", ")[-1] for line in lines if line.split()[1].startswith(path_prefix)]


@contextlib.contextmanager
def run_nginx(folder: Path, upstream_ports: list[int]) -> Iterator[Proxy]:
    """nginx in the foreground (``daemon off``), round-robin over the upstreams, WebSocket upgrade passed on."""
    binary = nginx_binary()
    if binary is None:
        raise FileNotFoundError("no nginx binary (apt-get install nginx)")
    prefix = folder / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, servers=servers))
    with open(prefix / "stderr.log", "wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(prefix / 'error.log').read_text(errors='replace')[-2000:]}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen within 30 s") from None
                time.sleep(0.1)
        yield Proxy(port, prefix)
    finally:
        stop(proc)
