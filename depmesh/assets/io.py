"""Where mesh assets live: tables as Parquet, models as content-addressed
artifacts with a small pointer file per model asset.

Layout under ``base_dir`` (default: the Dagster instance's storage folder,
``$DAGSTER_HOME/storage/depmesh``):

    tables/<asset/key>.parquet
    models/<asset/key>.json        {"artifact_hash": ..., "version": ...}
    artifacts/<ab>/<sha256>.pkl    the pickled TrainedModel, named by its hash
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from dagster import ConfigurableIOManagerFactory, InitResourceContext, InputContext, IOManager, OutputContext

from depmesh.artifacts import ArtifactStore, atomic_write


CACHE_BYTES = 512 * 1024 * 1024


class MeshStore(IOManager):
    """One per run (per step process under the multiprocess and Celery
    executors). Tables it wrote stay in memory, up to ``cache_bytes``, so a
    downstream step in the same process reads them without parsing the Parquet
    file again; an entry is used only while the file on disk is the one it
    wrote (same size and modification time). pandas' copy-on-write keeps a
    reader's changes out of the cached frame."""

    def __init__(self, base_dir: Path, cache_bytes: int = CACHE_BYTES):
        self.base = Path(base_dir)
        self.artifacts = ArtifactStore(self.base / "artifacts")
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[Path, tuple[tuple[int, int], Any, int]] = OrderedDict()

    def _remember(self, path: Path, frame: Any) -> None:
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
        stat = path.stat()
        self._cache[path] = ((stat.st_mtime_ns, stat.st_size), frame, size)
        while sum(entry[2] for entry in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)

    def _recall(self, path: Path) -> Any:
        entry = self._cache.get(path)
        if entry is None:
            return None
        stat = path.stat()
        if entry[0] != (stat.st_mtime_ns, stat.st_size):
            del self._cache[path]
            return None
        return entry[1].copy(deep=False)

    def table_path(self, key_path: list[str]) -> Path:
        return self.base / "tables" / Path(*key_path[:-1]) / f"{key_path[-1]}.parquet"

    def pointer_path(self, key_path: list[str]) -> Path:
        return self.base / "models" / Path(*key_path[:-1]) / f"{key_path[-1]}.json"

    # -- writing -------------------------------------------------------------------
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        import pandas as pd

        from depmesh.models import TrainedModel

        key_path = list(context.asset_key.path)
        if isinstance(obj, pd.DataFrame):
            path = self.table_path(key_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            obj.to_parquet(tmp, index=False)
            tmp.replace(path)
            self._remember(path, obj)
            context.add_output_metadata({"path": str(path), "bytes": path.stat().st_size})
        elif isinstance(obj, TrainedModel):
            digest, path, size = self.artifacts.put(obj)
            pointer = {"artifact_hash": digest, "version": obj.version, "node": obj.node}
            atomic_write(self.pointer_path(key_path), json.dumps(pointer, indent=2).encode())
            context.add_output_metadata(
                {"artifact_hash": digest, "artifact_path": str(path), "artifact_bytes": size}
            )
        else:
            raise TypeError(
                f"asset {'/'.join(key_path)}: expected a pandas DataFrame or a TrainedModel, "
                f"got {type(obj).__name__}"
            )

    # -- reading -------------------------------------------------------------------
    def load_input(self, context: InputContext) -> Any:
        key_path = list(context.asset_key.path)
        return self.load(key_path)

    def load(self, key_path: list[str]) -> Any:
        import pandas as pd

        pointer = self.pointer_path(key_path)
        if pointer.exists():
            meta = json.loads(pointer.read_text())
            return self.artifacts.get(meta["artifact_hash"])
        table = self.table_path(key_path)
        if table.exists():
            cached = self._recall(table)
            return cached if cached is not None else pd.read_parquet(table)
        raise FileNotFoundError(
            f"asset {'/'.join(key_path)} has not been materialized in {self.base} "
            f"(neither {table} nor {pointer} exists): materialize it first"
        )


class MeshIOManager(ConfigurableIOManagerFactory):
    """Stores mesh assets. ``base_dir`` defaults to the instance's storage folder."""

    base_dir: str | None = None

    def create_io_manager(self, context: InitResourceContext) -> MeshStore:
        if self.base_dir:
            return MeshStore(Path(self.base_dir))
        if context.instance is None:
            raise RuntimeError("MeshIOManager needs a Dagster instance or an explicit base_dir")
        return MeshStore(Path(context.instance.storage_directory()) / "depmesh")
