"""Where stored tables, model artifacts and training snapshots live: a local
folder (the default, under the Dagster instance) or an object store.

    DEPMESH_STORAGE_URL=s3://bucket/prefix     (or gs://..., any fsspec URL)

With it set, every process of a run (the run worker, each step process,
each Celery worker on any machine) reads and writes the mesh's tables and
artifacts there, through universal-pathlib and fsspec (s3fs for S3), so no
folder needs sharing between machines. The same content addressing and
verification apply: artifacts are named by their SHA-256, a table's hash is
recorded by its materialization, and every read is checked against the record.

Writes are whole or absent. On disk: a temporary file in the same folder,
fsynced, then renamed over the target. On an object store: one PUT of the
whole payload (an object store makes an object visible only when its upload
completed), with its MD5 sent as Content-MD5 so that the server refuses bytes
damaged on the way; payloads above the multipart size go as a multipart upload,
which is also visible only once completed.

Credentials come from the environment (for S3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for an S3-compatible server, or any
other source botocore reads), never from the URL, stored configuration or
logs: a URL that carries them is refused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

STORAGE_URL_ENV = "DEPMESH_STORAGE_URL"
SINGLE_PUT_BYTES = 50 * 2**20  # s3fs's default: larger payloads go as a multipart upload


class StorageConfigError(ValueError):
    """A storage URL that cannot be used."""


def location(where: str | os.PathLike[str]) -> Any:
    """A local ``Path``, or a universal-pathlib ``UPath`` for a URL."""
    if is_remote(where):
        return where  # already a path on an object store
    text = str(where)
    if "://" not in text:
        return Path(text)
    parts = urlsplit(text)
    if parts.scheme == "file":
        return Path(parts.path)
    if parts.username or parts.password:
        raise StorageConfigError(
            f"{STORAGE_URL_ENV}: the storage URL {parts.scheme}://{parts.hostname}{parts.path} carries credentials; "
            "give them through the environment (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) so they are "
            "never stored or logged")
    if not parts.netloc:
        raise StorageConfigError(f"{STORAGE_URL_ENV}: {text!r} names no bucket (expected e.g. s3://bucket/prefix)")
    from upath import UPath

    try:
        return UPath(text, **_options_from_environment(parts.scheme))
    except (ValueError, ImportError) as exc:
        raise StorageConfigError(f"{STORAGE_URL_ENV}: cannot open {text!r}: {exc}") from None


def _options_from_environment(scheme: str) -> dict[str, str]:
    """For S3, the endpoint and credentials the environment holds now, passed
    explicitly: fsspec keeps one filesystem per set of options for the life of
    the process, so a process whose environment changed (another endpoint, a
    rotated key) must not be handed the filesystem made for the old one. Held
    in memory only; the URL and everything stored stay free of them."""
    if scheme not in ("s3", "s3a"):
        return {}
    env = os.environ
    options = {}
    if env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"):
        options["endpoint_url"] = env.get("AWS_ENDPOINT_URL_S3") or env["AWS_ENDPOINT_URL"]
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        options["key"], options["secret"] = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            options["token"] = env["AWS_SESSION_TOKEN"]
    return options


def configured(default: str | os.PathLike[str]) -> Any:
    """The storage root: ``$DEPMESH_STORAGE_URL`` when set, else ``default`` (a local folder)."""
    url = os.environ.get(STORAGE_URL_ENV, "").strip()
    return location(url) if url else Path(default)


def is_remote(path: Any) -> bool:
    return getattr(path, "protocol", "") not in ("", "file", "local")


def write_whole(path: Any, payload: bytes) -> None:
    """Store ``payload`` at ``path`` so that a reader sees all of it or none of it."""
    if not is_remote(path):
        path = Path(path)
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
        return
    extra: dict[str, Any] = {}
    if path.protocol in ("s3", "s3a") and len(payload) < SINGLE_PUT_BYTES:
        extra["ContentMD5"] = base64.b64encode(hashlib.md5(payload, usedforsecurity=False).digest()).decode()
    path.fs.pipe_file(path.path, payload, **extra)


def token(path: Any) -> tuple[Any, ...]:
    """What identifies the bytes now at ``path`` without reading them (a cache key)."""
    if not is_remote(path):
        st = Path(path).stat()
        return (st.st_mtime_ns, st.st_size)
    info = path.fs.info(path.path)
    return (info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("mtime"), info.get("size"))


__all__ = ["STORAGE_URL_ENV", "StorageConfigError", "configured", "is_remote", "location", "token", "write_whole"]
