"""Content-addressed model artifacts, verified against the record.

A model artifact is a deterministic zip (a *bundle*):

    manifest.json        what the model is: node, version, task, features, metrics,
                         split, the estimator's serializer and hash, its upstream models
    estimator.skops      the scikit-learn estimator, in skops' format (no code runs on
                         load; only the types of TRUSTED_MODULES and the catalog's
                         ``model.trusted_types`` are loaded)
    estimator.pkl        instead of the above, only when the catalog opts in with
                         ``model.serializer: pickle`` (estimators skops cannot hold)
    sample.parquet       a few raw input rows (latency and memory gates)
    upstream/N.model     the bundles of the upstream models it was trained against

The same model version gives the same bytes: entries are written in a fixed
order with fixed timestamps, and skops' object ids (memory addresses) are
renumbered in document order. The file is stored under the SHA-256 of its bytes.

A load is always told which hash and which version to expect: the hash recorded
for that version (Dagster's materialization metadata, or the registry row),
never a file stored beside the artifact. The bytes are hashed before anything
is parsed; a mismatch names both hashes and how to recover. Upstream bundles
inside a verified bundle are verified against the hashes its manifest records.

Artifacts written before bundles existed (a pickled TrainedModel, ``.pkl``)
still load, after the same hash check, until the version is retrained.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depmesh.catalog.spec import (
    SERIALIZERS,
    ColumnSplit,
    RandomSplit,
    TableSplit,
    TimeSplit,
)
from depmesh.storage import location, write_whole

BUNDLE_FORMAT = "depmesh-model/1"
# Types from these packages may be loaded from a skops file. Anything else
# (a custom transformer, a function) must be named in the catalog's
# model.trusted_types, or the load is refused and names it.
TRUSTED_MODULES = ("sklearn.",)
# ... and these, which fitted scikit-learn estimators hold (a partial's
# function is itself a type skops lists, so it must be trusted on its own)
TRUSTED_TYPES = ("numpy.dtype", "functools.partial")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# set on a TrainedModel loaded from, or packed into, a bundle: those bytes are what a downstream bundle embeds
# (not a dataclass field, so dataclasses.replace, e.g. swapping the estimator, drops it)
BUNDLE_ATTR = "_bundle"
RECOVER = ("rebuild that version (materialize the model again: the same inputs and code give the same version, "
           "and the store rewrites a file that fails its hash), or roll back to a version whose artifact is intact")


class ArtifactIntegrityError(RuntimeError):
    """An artifact is missing, does not match the hash recorded for its
    version, or does not hold the version it was recorded for."""


class UntrustedArtifact(ArtifactIntegrityError):
    """A skops estimator holds a type that is not trusted."""


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def atomic_write(path: Any, payload: bytes) -> None:
    """All of ``payload`` at ``path`` or nothing: on disk or on an object store (depmesh.storage)."""
    write_whole(path, payload)


# -- deterministic zips ----------------------------------------------------------------
def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, entries[name])
    return buffer.getvalue()


def _unzip(payload: bytes, what: str) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ArtifactIntegrityError(f"{what} is not a readable model bundle: {exc}") from None


MAX_MANIFEST_BYTES = 1_000_000


def bundle_manifest(payload: bytes, what: str) -> dict[str, Any]:
    """A bundle's manifest.json alone (read through a size cap, whatever the zip's header claims)."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf, zf.open("manifest.json") as entry:
            raw = entry.read(MAX_MANIFEST_BYTES + 1)
    except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise ArtifactIntegrityError(f"{what} is not a readable model bundle: {exc}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ArtifactIntegrityError(f"{what}: its manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ArtifactIntegrityError(f"{what}: its manifest is not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactIntegrityError(f"{what}: its manifest is not a JSON object")
    return manifest


def canonical_skops(payload: bytes) -> bytes:
    """skops' file with its object ids renumbered in document order and
    written as a deterministic zip: the same estimator gives the same bytes."""
    files = _unzip(payload, "the skops file")
    schema = json.loads(files.pop("schema.json"))
    numbers: dict[str, str] = {}

    def renumber(value: Any) -> str:
        return numbers.setdefault(str(value), str(len(numbers) + 1))

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            out = {}
            for key, value in obj.items():
                if key == "__id__" and isinstance(value, int):
                    out[key] = int(renumber(value))
                elif key == "file" and isinstance(value, str) and value.endswith(".npy") and "__loader__" in obj:
                    out[key] = renumber(value[: -len(".npy")]) + ".npy"
                else:
                    out[key] = walk(value)
            return out
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        return obj

    schema = walk(schema)
    renamed = {}
    for name, data in files.items():
        stem = name[: -len(".npy")] if name.endswith(".npy") else None
        if stem is None or stem not in numbers:
            raise ArtifactIntegrityError(f"unexpected entry {name!r} in a skops file")
        renamed[numbers[stem] + ".npy"] = data
    renamed["schema.json"] = json.dumps(schema, sort_keys=False, separators=(",", ":")).encode()
    return _zip(renamed)


def trusted_types(payload: bytes, extra: tuple[str, ...] = ()) -> list[str]:
    """The types of a skops file that may be loaded; raises UntrustedArtifact
    naming every other type."""
    import skops.io as sio

    found = sio.get_untrusted_types(data=payload)
    untrusted = [t for t in found if not t.startswith(TRUSTED_MODULES) and t not in TRUSTED_TYPES and t not in extra]
    if untrusted:
        raise UntrustedArtifact(
            f"the estimator holds types that are not trusted: {', '.join(sorted(untrusted))}; name them in the "
            "catalog's model.trusted_types if you trust their code, or use model.serializer: pickle (runs code "
            "on load)")
    return list(found)


# -- model bundles -------------------------------------------------------------------
def _frame_bytes(frame: Any) -> bytes | None:
    if frame is None:
        return None
    buffer = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


def frame_from_parquet(payload: bytes) -> Any:
    """A DataFrame from Parquet bytes, read through a pyarrow buffer, never a Python file object (io.BytesIO):
    pyarrow's dataset reader may release a Python file from one of its worker threads while the interpreter exits,
    which aborts the process with SIGABRT ("terminate called without an active exception"; about one exit in
    thirteen after a single read, measured). A step or command that had succeeded would then die with -6."""
    import pandas as pd
    import pyarrow as pa

    return pd.read_parquet(pa.BufferReader(payload))


def _split_json(split: Any) -> dict[str, Any] | None:
    from dataclasses import asdict


    if split is None:
        return None
    kind = ("random" if isinstance(split, RandomSplit) else "column" if isinstance(split, ColumnSplit)
            else "table" if isinstance(split, TableSplit) else "time")
    fields = {k: (v.isoformat() if hasattr(v, "isoformat") else list(v) if isinstance(v, tuple) else v)
              for k, v in asdict(split).items()}
    return {"kind": kind, **fields} if kind != "time" else fields  # time splits keep the format of before


def _split_from(raw: dict[str, Any] | None) -> Any:
    if raw is None:
        return None
    from datetime import date


    raw = dict(raw)
    kind = raw.pop("kind", "time")
    if kind == "table":
        return TableSplit(**raw)
    if kind == "random":
        return RandomSplit(**raw)
    if kind == "column":
        return ColumnSplit(column=raw["column"], evaluate=tuple(raw["evaluate"]), score=tuple(raw["score"]))
    return TimeSplit(raw["time_column"], date.fromisoformat(raw["train_until"]),
                     date.fromisoformat(raw["evaluate_until"]))


def pack(model: Any, serializer: str = "skops", trusted: tuple[str, ...] = ()) -> bytes:
    """A TrainedModel -> its bundle's bytes (deterministic for a version)."""
    if serializer not in SERIALIZERS:
        raise ValueError(f"unknown serializer {serializer!r} (known: {', '.join(SERIALIZERS)})")
    if not model.version:
        raise ValueError(f"model {model.node} has no version yet: it is set before the model is stored")
    entries: dict[str, bytes] = {}
    if serializer == "skops":
        import skops.io as sio

        estimator = canonical_skops(sio.dumps(model.estimator))
        trusted_types(estimator, trusted)  # refuse now what could not be loaded later
        entries["estimator.skops"] = estimator
    else:
        estimator = pickle.dumps(model.estimator, protocol=5)
        entries["estimator.pkl"] = estimator
    sample = _frame_bytes(model.sample_input)
    if sample is not None:
        entries["sample.parquet"] = sample
    upstream = {}
    for i, (name, up) in enumerate(sorted(model.upstream.items())):
        # a model loaded from (or packed into) a verified bundle is embedded as those very bytes
        up_bytes = getattr(up, BUNDLE_ATTR, None) or pack(up, up.serializer, up.trusted_types)
        entries[f"upstream/{i}.model"] = up_bytes
        upstream[name] = {"version": up.version, "sha256": sha256(up_bytes), "entry": f"upstream/{i}.model"}
    manifest = {
        "format": BUNDLE_FORMAT, "node": model.node, "version": model.version, "task": model.task,
        "features": list(model.features), "target": model.target, "prediction_column": model.prediction_column,
        "metrics": {k: float(v) for k, v in model.metrics.items()}, "rows_trained": int(model.rows_trained),
        "split": _split_json(model.split), "positive_above": model.positive_above,
        "categorical": list(model.categorical), "serializer": serializer, "trusted_types": list(trusted),
        "estimator_sha256": sha256(estimator), "upstream": upstream,
    }
    entries["manifest.json"] = json.dumps(manifest, sort_keys=True, indent=1).encode()
    return _zip(entries)


def _check(payload: bytes, expected_sha: str, version: str, what: str) -> None:
    actual = sha256(payload)
    if actual != expected_sha:
        raise ArtifactIntegrityError(
            f"{what} is corrupt or was replaced: its content hashes to {actual}, but version {version} was recorded "
            f"with {expected_sha}; refusing to load it. To recover: {RECOVER}")


def unpack(payload: bytes, *, expected_sha: str, expected_version: str, what: str = "artifact") -> Any:
    """Bundle bytes -> TrainedModel, after checking them against the recorded
    hash and version. Legacy pickled artifacts load after the same checks."""
    from depmesh.models import TrainedModel

    _check(payload, expected_sha, expected_version, what)
    if not payload.startswith(b"PK"):
        model = pickle.loads(payload)  # a legacy artifact: its hash matched the record
    else:
        files = _unzip(payload, what)
        if "manifest.json" not in files:
            raise ArtifactIntegrityError(f"{what} has no manifest.json: it is not a depmesh model bundle")
        manifest = json.loads(files["manifest.json"])
        if manifest.get("format") != BUNDLE_FORMAT:
            raise ArtifactIntegrityError(f"{what} has format {manifest.get('format')!r}, this depmesh reads "
                                         f"{BUNDLE_FORMAT!r}")
        upstream = {}
        for name, ref in sorted(manifest["upstream"].items()):
            up_bytes = files.get(ref["entry"])
            if up_bytes is None:
                raise ArtifactIntegrityError(f"{what} lacks its upstream model {name} ({ref['entry']})")
            upstream[name] = unpack(up_bytes, expected_sha=ref["sha256"], expected_version=ref["version"],
                                    what=f"{what}: upstream {name}")
        estimator = _load_estimator(files, manifest, what)
        sample = None
        if "sample.parquet" in files:
            sample = frame_from_parquet(files["sample.parquet"])
        model = TrainedModel(
            node=manifest["node"], task=manifest["task"], estimator=estimator, features=manifest["features"],
            target=manifest["target"], prediction_column=manifest["prediction_column"], upstream=upstream,
            metrics=manifest["metrics"], rows_trained=manifest["rows_trained"],
            split=_split_from(manifest["split"]), positive_above=manifest["positive_above"],
            sample_input=sample, categorical=manifest["categorical"], version=manifest["version"],
            serializer=manifest["serializer"], trusted_types=tuple(manifest["trusted_types"]))
        setattr(model, BUNDLE_ATTR, payload)
    if getattr(model, "version", None) != expected_version:
        raise ArtifactIntegrityError(
            f"{what} holds version {getattr(model, 'version', None)!r}, not the recorded version {expected_version}: "
            f"an artifact of another version was stored under this record. To recover: {RECOVER}")
    return model


def _load_estimator(files: dict[str, bytes], manifest: dict[str, Any], what: str) -> Any:
    serializer = manifest["serializer"]
    name = {"skops": "estimator.skops", "pickle": "estimator.pkl"}.get(serializer)
    data = files.get(name or "")
    if data is None:
        raise ArtifactIntegrityError(f"{what} has no estimator for serializer {serializer!r}")
    if sha256(data) != manifest["estimator_sha256"]:
        raise ArtifactIntegrityError(f"{what}: the estimator does not match its manifest's hash")
    if serializer == "pickle":
        return pickle.loads(data)  # opted into in the catalog; the bundle's hash matched the record
    import skops.io as sio

    return sio.loads(data, trusted=trusted_types(data, tuple(manifest["trusted_types"])))


@dataclass(frozen=True)
class PackedModel:
    """A model and its bundle, packed once: the registry records the hash and
    the store writes the same bytes."""

    model: Any
    payload: bytes
    sha256: str

    @classmethod
    def of(cls, model: Any, serializer: str = "skops", trusted: tuple[str, ...] = ()) -> PackedModel:
        model.serializer, model.trusted_types = serializer, tuple(trusted)
        payload = pack(model, serializer, trusted)
        setattr(model, BUNDLE_ATTR, payload)
        return cls(model, payload, sha256(payload))


# -- the store -----------------------------------------------------------------------
class ArtifactStore:
    """Files named by their hash under ``root``: ``<ab>/<sha256>.model``
    (legacy: ``.pkl``)."""

    SUFFIXES = (".model", ".pkl")

    def __init__(self, root: str | Path):
        self.root = location(root)  # a folder, or an object-store URL (DEPMESH_STORAGE_URL)

    def path_for(self, digest: str, suffix: str = ".model") -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ArtifactIntegrityError(f"{digest!r} is not a SHA-256 hex digest")
        return self.root / digest[:2] / f"{digest}{suffix}"

    def find(self, digest: str) -> Path | None:
        for suffix in self.SUFFIXES:
            path = self.path_for(digest, suffix)
            if path.exists():
                return path
        return None

    def put_bytes(self, payload: bytes, digest: str | None = None) -> tuple[str, Path]:
        """Store bytes under their hash. A file already there is kept only if
        it still matches: a corrupt or truncated one is rewritten."""
        digest = digest or sha256(payload)
        path = self.path_for(digest)
        try:
            intact = sha256(path.read_bytes()) == digest
        except FileNotFoundError:
            intact = False
        if not intact:
            atomic_write(path, payload)
        return digest, path

    def read(self, digest: str, version: str) -> bytes:
        path = self.find(digest)
        if path is None:
            raise ArtifactIntegrityError(
                f"the artifact of version {version} is missing: no {self.path_for(digest)} (recorded hash {digest}). "
                f"To recover: {RECOVER}")
        return path.read_bytes()

    def get(self, digest: str, version: str) -> Any:
        """The model recorded as ``version`` with hash ``digest``, verified."""
        payload = self.read(digest, version)
        return unpack(payload, expected_sha=digest, expected_version=version, what=f"artifact {self.find(digest)}")

    def verify(self, digest: str, version: str, node: str | None = None) -> None:
        """Raise ArtifactIntegrityError unless the artifact exists, matches ``digest`` and (a bundle) says inside
        that it is ``version`` of ``node``: a record pointing at another version's or model's intact bundle is
        not trusted either."""
        payload = self.read(digest, version)
        what = f"artifact {self.find(digest)}"
        _check(payload, digest, version, what)
        if payload.startswith(b"PK"):
            manifest = bundle_manifest(payload, what)
            if manifest.get("version") != version or (node is not None and manifest.get("node") != node):
                raise ArtifactIntegrityError(
                    f"{what} holds {manifest.get('node')}@{manifest.get('version')}, not "
                    f"{node + '@' if node else 'version '}{version}: the record points at another model's bundle. "
                    f"To recover: {RECOVER}")
