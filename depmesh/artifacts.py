"""Content-addressed model artifacts: the file name is the hash of the bytes.

An artifact is written once (atomically), and verified before every load:
a file whose hash does not match its name is never unpickled.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any


class ArtifactIntegrityError(RuntimeError):
    """An artifact's bytes do not match the hash it is stored under."""


def serialize(obj: Any) -> tuple[bytes, str]:
    payload = pickle.dumps(obj, protocol=5)
    return payload, hashlib.sha256(payload).hexdigest()


def atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.pkl"

    def put(self, obj: Any) -> tuple[str, Path, int]:
        """Store ``obj``; returns (sha256, path, size). Idempotent."""
        payload, digest = serialize(obj)
        path = self.path_for(digest)
        if not path.exists():
            atomic_write(path, payload)
        return digest, path, len(payload)

    def get(self, digest: str) -> Any:
        path = self.path_for(digest)
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactIntegrityError(f"artifact {digest} is missing: {path} does not exist") from None
        actual = hashlib.sha256(payload).hexdigest()
        if actual != digest:
            raise ArtifactIntegrityError(
                f"artifact {path} is corrupt or was tampered with: its content hashes to {actual}, "
                f"not {digest}; refusing to load it"
            )
        return pickle.loads(payload)
