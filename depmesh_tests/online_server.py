"""A real `depmesh serve` process on a free loopback port, and a keep-alive JSON client for it (tests and
benches/serve_bench.py)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class Server:
    """``depmesh serve ARGS`` started in its own process group on port 0; ``url`` once it printed its address."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                 command: list[str] | None = None, log: Path | None = None):
        base = command or [sys.executable, "-m", "depmesh.cli", "serve"]
        self.log = open(log, "w+") if log else None
        self.proc = subprocess.Popen([*base, *args, "--port", "0"] if "--port" not in args else [*base, *args],
                                     stdout=subprocess.PIPE, stderr=self.log or subprocess.DEVNULL, text=True,
                                     env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
        self.banner = []
        line = self.proc.stdout.readline()
        self.banner.append(line)
        if "listening on http://" not in line:
            self.stop()
            raise RuntimeError(f"depmesh serve did not start: {line!r} {self.stderr()}")
        self.url = line.split("listening on ")[1].split()[0]
        self.host, port = self.url.removeprefix("http://").split(":")
        self.port = int(port)
        self.banner.append(self.proc.stdout.readline())  # the line that says who may reach it

    def stderr(self) -> str:
        if self.log is None:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def client(self, token: str | None = None, reconnect: bool = True) -> Client:
        return Client(self.host, self.port, token, reconnect=reconnect)

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        client, deadline = self.client(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, body = client.get("/readyz")
                if status == 200:
                    return body
            except OSError:
                client = self.client()
            if self.proc.poll() is not None:
                raise RuntimeError(f"depmesh serve exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.1)
        raise TimeoutError(f"not ready after {timeout} s: {body} {self.stderr()}")

    def stop(self) -> None:
        from depmesh_tests.conftest import stop_process_group

        if self.proc.poll() is None:
            stop_process_group(self.proc)
        self.proc.stdout.close()
        if self.log is not None:
            self.log.close()


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects once when the server closed it."""

    def __init__(self, host: str, port: int, token: str | None = None, timeout: float = 30, reconnect: bool = True):
        self.host, self.port, self.token, self.timeout, self.reconnect = host, port, token, timeout, reconnect
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        payload = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=payload, headers=sent)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt or not self.reconnect:
                    raise
        kind = response.getheader("content-type", "")
        return response.status, (json.loads(data) if kind.startswith("application/json") else data.decode())

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.request("GET", path, **kw)

    def predict(self, node: str, records: list[dict[str, Any]], **kw: Any) -> tuple[int, Any]:
        return self.request("POST", f"/v1/models/{node}:predict", {"records": records}, **kw)

    def close(self) -> None:
        self.conn.close()
