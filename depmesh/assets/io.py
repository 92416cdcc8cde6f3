"""Where mesh assets live, and how a read is checked against the record.

Layout under ``base_dir`` (default: the Dagster instance's storage folder,
``$DAGSTER_HOME/storage/depmesh``):

    tables/<asset/key>.parquet
    artifacts/<ab>/<sha256>.model     model bundles, named by their hash (depmesh.artifacts)

Nothing beside these files says what they should hold. Every read looks up the
asset's latest materialization on the Dagster instance, which recorded the
file's SHA-256 (tables: ``file_sha256``; models: ``artifact_hash`` and
``model_version``), and refuses bytes that do not match: a rewritten table, a
planted or swapped artifact fails the step and names the file.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    ConfigurableIOManagerFactory,
    InitResourceContext,
    InputContext,
    IOManager,
    OutputContext,
)

from depmesh import storage
from depmesh.artifacts import (
    RECOVER,
    ArtifactIntegrityError,
    ArtifactStore,
    PackedModel,
    atomic_write,
    frame_from_parquet,
    sha256,
)
from depmesh.versions import frame_version

CACHE_BYTES = 512 * 1024 * 1024
TABLE_HASH_KEY = "file_sha256"  # a table's materialization metadata: the SHA-256 of its Parquet file
ARTIFACT_HASH_KEY = "artifact_hash"
MODEL_VERSION_KEY = "model_version"
DATA_VERSION_KEY = "data_version"


class StoredTableMismatch(ArtifactIntegrityError):
    """A stored table's file is not the one its materialization recorded."""


def recorded_metadata(instance: Any, key_path: list[str]) -> dict[str, Any] | None:
    """The metadata of the asset's latest materialization on ``instance`` (the record a read verifies against)."""
    event = instance.get_latest_materialization_event(AssetKey(key_path))
    if event is None or event.asset_materialization is None:
        return None
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


class MeshStore(IOManager):
    """One per run (per step process under the multiprocess and Celery
    executors). Tables it wrote stay in memory, up to ``cache_bytes``, so a
    downstream step in the same process reads them without parsing the Parquet
    file again; an entry is used only while the record names the very bytes it
    wrote and the file on disk is unchanged (size, modification time). Models
    are kept by their verified hash. pandas' copy-on-write keeps a reader's
    changes out of the cached frame."""

    def __init__(self, base_dir: Any, cache_bytes: int = CACHE_BYTES, instance: Any = None):
        self.base = storage.location(base_dir)
        self.artifacts = ArtifactStore(self.base / "artifacts")
        self.cache_bytes = cache_bytes
        self.instance = instance
        self._cache: OrderedDict[Path, tuple[tuple[int, int, str], Any, int]] = OrderedDict()
        self._models: dict[tuple[str, str], Any] = {}

    def _remember(self, path: Path, frame: Any, digest: str) -> None:
        import pandas as pd

        self._cache.pop(path, None)
        index = frame.index
        if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
            return  # the file drops the index: a reader must get what the file holds
        if any(dtype == object for dtype in frame.dtypes):
            return  # mixed Python objects may not read back as they were written
        size = int(frame.memory_usage(index=True, deep=False).sum())
        if size > self.cache_bytes:
            return
        self._cache[path] = ((*storage.token(path), digest), frame, size)
        while sum(entry[2] for entry in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)

    def _recall(self, path: Path, digest: str | None) -> Any:
        entry = self._cache.get(path)
        if entry is None:
            return None
        try:
            now = (*storage.token(path), digest)
        except FileNotFoundError:
            now = None
        if entry[0] != now:
            del self._cache[path]
            return None
        return entry[1].copy(deep=False)

    def table_path(self, key_path: list[str]) -> Any:
        return self.base.joinpath("tables", *key_path[:-1], f"{key_path[-1]}.parquet")

    # -- writing -------------------------------------------------------------------
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        context.add_output_metadata(self.write(list(context.asset_key.path), obj))

    def write(self, key_path: list[str], obj: Any) -> dict[str, Any]:
        """Store a table or a model; returns the metadata that records it."""
        import pandas as pd

        from depmesh.models import TrainedModel

        if isinstance(obj, TrainedModel):
            obj = PackedModel.of(obj, obj.serializer, obj.trusted_types)
        if isinstance(obj, pd.DataFrame):
            path = self.table_path(key_path)
            buffer = io.BytesIO()
            obj.to_parquet(buffer, index=False)
            payload = buffer.getvalue()
            digest = sha256(payload)
            atomic_write(path, payload)
            self._remember(path, obj, digest)
            return {"path": str(path), "bytes": len(payload), TABLE_HASH_KEY: digest}
        if isinstance(obj, PackedModel):
            digest, path = self.artifacts.put_bytes(obj.payload, obj.sha256)
            self._models[(digest, obj.model.version)] = obj.model
            return {ARTIFACT_HASH_KEY: digest, "artifact_path": str(path), "artifact_bytes": len(obj.payload)}
        raise TypeError(f"asset {'/'.join(key_path)}: expected a pandas DataFrame or a TrainedModel, "
                        f"got {type(obj).__name__}")

    # -- reading -------------------------------------------------------------------
    def load_input(self, context: InputContext) -> Any:
        return self.load(list(context.asset_key.path), context.instance)

    def load(self, key_path: list[str], instance: Any = None, record: dict[str, Any] | None = None) -> Any:
        """The asset as its latest materialization on ``instance`` recorded it
        (or as ``record`` says), verified; ArtifactIntegrityError otherwise."""
        name = "/".join(key_path)
        if record is None:
            instance = instance or self.instance
            if instance is None:
                raise ValueError(f"reading {name} needs the Dagster instance that recorded it (to verify the file)")
            record = recorded_metadata(instance, key_path)
            if record is None:
                raise FileNotFoundError(f"asset {name} has not been materialized on this instance: materialize it first")
        if ARTIFACT_HASH_KEY in record:
            return self._load_model(name, str(record[ARTIFACT_HASH_KEY]), str(record.get(MODEL_VERSION_KEY, "")))
        return self._load_table(name, key_path, record)

    def _load_model(self, name: str, digest: str, version: str) -> Any:
        if not version:
            raise ArtifactIntegrityError(f"{name}: its materialization recorded no model_version to verify against")
        cached = self._models.get((digest, version))
        if cached is None:
            cached = self.artifacts.get(digest, version)
            self._models[(digest, version)] = cached
        if cached.node != name:
            raise ArtifactIntegrityError(f"{name}: the recorded artifact {digest} holds model {cached.node}")
        return cached

    def _load_table(self, name: str, key_path: list[str], record: dict[str, Any]) -> Any:
        path = self.table_path(key_path)
        expected = record.get(TABLE_HASH_KEY)
        cached = self._recall(path, expected) if expected else None
        if cached is not None:
            return cached
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            raise StoredTableMismatch(f"{name}: its stored table {path} is missing. To recover: materialize {name} "
                                      "again") from None
        if expected is not None:
            actual = sha256(payload)
            if actual != expected:
                raise StoredTableMismatch(
                    f"{name}: the stored table {path} was changed after it was materialized: the file hashes to "
                    f"{actual}, its materialization recorded {expected}; refusing to read it. To recover: "
                    f"materialize {name} again (and find out who wrote the file)")
            return frame_from_parquet(payload)
        frame = frame_from_parquet(payload)  # recorded before file hashes: check the content version
        recorded = record.get(DATA_VERSION_KEY)
        if recorded is not None:

            actual = frame_version(frame)
            if actual != recorded:
                raise StoredTableMismatch(
                    f"{name}: the stored table {path} holds data version {actual}, its materialization recorded "
                    f"{recorded}; refusing to read it. To recover: materialize {name} again")
        return frame


class MeshIOManager(ConfigurableIOManagerFactory):
    """Stores mesh assets. ``base_dir`` defaults to ``$DEPMESH_STORAGE_URL``, else the instance's storage folder."""

    base_dir: str | None = None

    def create_io_manager(self, context: InitResourceContext) -> MeshStore:
        if self.base_dir:
            return MeshStore(self.base_dir, instance=context.instance)
        if context.instance is None:
            raise RuntimeError("MeshIOManager needs a Dagster instance or an explicit base_dir")
        return MeshStore(data_root(context.instance), instance=context.instance)


def storage_dir(instance: Any) -> Path:
    """Where the mesh's tables and artifacts live for ``instance``."""
    return Path(instance.storage_directory()) / "depmesh"


def data_root(instance: Any) -> Any:
    """Where the mesh's tables, artifacts and snapshots live for ``instance``:
    ``$DEPMESH_STORAGE_URL`` (an object store) when set, else its storage folder."""
    return storage.configured(storage_dir(instance))


def artifacts_location(instance: Any) -> Any:
    return data_root(instance) / "artifacts"


def local_storage(home: Path) -> Path:
    """``storage_dir`` of the instance at ``home``, for commands that open no instance (reports live here)."""
    return Path(home) / "storage" / "depmesh"


def artifacts_dir(home: Path) -> Any:
    """The artifact store of the instance at ``home``, for commands that open no instance."""
    return storage.configured(local_storage(home)) / "artifacts"


__all__ = ["MeshIOManager", "MeshStore", "RECOVER", "artifacts_dir", "artifacts_location", "data_root",
           "local_storage", "recorded_metadata", "storage_dir"]
