"""Content-addressed snapshots of training inputs: ``<root>/<ab>/<sha256>.parquet``,
the very bytes of the stored table a training read (hard-linked when the
storage folder allows it, so a snapshot costs no copy; the stored table is
always replaced by a rename, never rewritten in place, so the link keeps the
old bytes). A retention rule drops old snapshots, never one that the recipe
of a Staging or Production version needs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from depmesh.artifacts import atomic_write, sha256
from depmesh.storage import is_remote, location


class SnapshotStore:
    def __init__(self, root: str | Path):
        self.root = location(root)  # a folder or an object-store URL

    @classmethod
    def beside(cls, artifacts_root: str | Path) -> SnapshotStore:
        """The snapshot store of an instance, next to its artifact store."""
        return cls(location(artifacts_root).parent / "snapshots")

    def path_for(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{digest!r} is not a SHA-256 hex digest")
        return self.root / digest[:2] / f"{digest}.parquet"

    def has(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def put_file(self, source: Path, digest: str) -> bool:
        """Keep ``source`` (whose bytes should hash to ``digest``) as a
        snapshot; True if the snapshot holds exactly those bytes."""
        target = self.path_for(digest)
        if target.is_file():
            return True
        tmp = target.with_name(f".{target.name}.{os.getpid()}.link")
        try:
            if is_remote(target) or is_remote(source):
                raise OSError("an object store: no hard links")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, tmp)
        except OSError:
            try:
                payload = source.read_bytes()
            except OSError:
                return False
            if sha256(payload) != digest:
                return False
            atomic_write(target, payload)
            return True
        if sha256(tmp.read_bytes()) != digest:  # the table was replaced after it was read
            tmp.unlink(missing_ok=True)
            return False
        os.replace(tmp, target)
        return True

    def put_bytes(self, payload: bytes) -> str:
        digest = sha256(payload)
        if not self.has(digest):
            atomic_write(self.path_for(digest), payload)
        return digest

    def all(self) -> dict[str, Path]:
        if not self.root.is_dir():
            return {}
        return {p.stem: p for p in self.root.glob("??/*.parquet")}

    def prune(self, keep: set[str], older_than_days: float, now: float | None = None) -> tuple[list[str], list[str]]:
        """Delete snapshots older than ``older_than_days`` that are not in
        ``keep``; returns (deleted, kept because protected)."""
        now = time.time() if now is None else now
        deleted, protected = [], []
        for digest, path in sorted(self.all().items()):
            if now - path.stat().st_mtime < older_than_days * 86400:
                continue
            if digest in keep:
                protected.append(digest)
                continue
            path.unlink(missing_ok=True)
            deleted.append(digest)
        return deleted, protected
