"""Several msgapi processes behind nginx, for ``python -m bench.run --processes N``.

The load generator talks to nginx, which spreads keep-alive connections over the
processes as deploy/nginx.conf does in production. Each process is a ``Server``; they
share the database and the SECRET_KEY, so any of them answers any request.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from bench.server_process import stop_process


def nginx_path() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class NginxFront:
    """nginx on a free loopback port, proxying to ``upstreams`` (host, port) pairs."""

    def __init__(self, upstreams: list[tuple[str, int]], folder: Path) -> None:
        binary = nginx_path()
        if binary is None:
            raise RuntimeError("--processes needs nginx (Debian package nginx or nginx-light)")
        self.host, self.port = "127.0.0.1", _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"        server {host}:{port};" for host, port in upstreams)
        temp = "\n".join(
            f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        config = folder / "nginx.conf"
        config.write_text(
            f"""worker_processes 1;
daemon off;
pid {folder / 'nginx.pid'};
error_log {folder / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    upstream msgapi {{
{servers}
        keepalive 64;
    }}
    server {{
        listen {self.host}:{self.port};
        location / {{
            proxy_pass http://msgapi;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
""",
            encoding="utf-8",
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(config), "-p", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(folder / 'error.log').read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)
