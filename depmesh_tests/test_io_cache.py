"""The store keeps the tables it wrote in memory for readers in the same
process: they get exactly what the file holds, and never a stale or shared copy."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    build_input_context,
    instance_for_test,
)

from depmesh.assets.io import MeshStore


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "instance").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "instance")) as inst:
        yield inst


def _write(store: MeshStore, key: list[str], frame: pd.DataFrame) -> None:
    """Store the table and record its materialization, as a step does."""
    metadata = store.write(key, frame)
    store.instance.report_runless_asset_event(AssetMaterialization(AssetKey(key), metadata=metadata))


def _read(store: MeshStore, key: list[str]) -> pd.DataFrame:
    return store.load_input(build_input_context(asset_key=AssetKey(key), instance=store.instance))


def test_a_table_written_in_this_process_is_read_back_without_parsing_the_file(tmp_path, instance, monkeypatch):
    store = MeshStore(tmp_path, instance=instance)
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    _write(store, ["t", "one"], frame)

    def refuse(*_args, **_kwargs):
        raise AssertionError("read the Parquet file although the table was in memory")

    monkeypatch.setattr(pd, "read_parquet", refuse)
    got = _read(store, ["t", "one"])
    pd.testing.assert_frame_equal(got, frame)
    # a reader changing its copy changes neither the cache nor the next reader's copy
    got.loc[0, "a"] = 99
    got["c"] = 1
    pd.testing.assert_frame_equal(_read(store, ["t", "one"]), frame)


def test_a_file_changed_on_disk_and_recorded_is_read_from_disk(tmp_path, instance):
    store, other = MeshStore(tmp_path, instance=instance), MeshStore(tmp_path, instance=instance)
    _write(store, ["t", "one"], pd.DataFrame({"a": [1, 2, 3]}))
    newer = pd.DataFrame({"a": [7, 8]})
    _write(other, ["t", "one"], newer)  # another process (here: another store) replaced the file
    path = store.table_path(["t", "one"])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    pd.testing.assert_frame_equal(_read(store, ["t", "one"]), newer)


def test_frames_the_file_cannot_reproduce_are_not_kept(tmp_path, instance, monkeypatch):
    store = MeshStore(tmp_path, instance=instance)
    indexed = pd.DataFrame({"a": [1, 2]}, index=[10, 20])
    _write(store, ["t", "indexed"], indexed)
    mixed = pd.DataFrame({"a": ["x", None]}, dtype=object)  # reads back as str, not object
    _write(store, ["t", "mixed"], mixed)
    assert store._cache == {}
    # what a reader gets is what the file holds: the index is not stored
    assert list(_read(store, ["t", "indexed"]).index) == [0, 1]


def test_the_cache_stays_within_its_byte_budget(tmp_path, instance):
    store = MeshStore(tmp_path, cache_bytes=3_000, instance=instance)
    for i in range(5):
        _write(store, ["t", f"n{i}"], pd.DataFrame({"a": range(100)}))  # about 800 bytes each
    kept = [p.stem for p in store._cache]
    assert kept == ["n2", "n3", "n4"]  # the oldest went first
    pd.testing.assert_frame_equal(_read(store, ["t", "n0"]), pd.DataFrame({"a": range(100)}))


def test_a_cached_table_is_not_served_once_the_record_names_other_bytes(tmp_path, instance):
    """Another process stored a new version (new record) within the same
    second and size: the cache entry holds the old bytes' hash, so it is not used."""
    store, other = MeshStore(tmp_path, instance=instance), MeshStore(tmp_path, instance=instance)
    _write(store, ["t", "one"], pd.DataFrame({"a": [1, 2, 3]}))
    path = store.table_path(["t", "one"])
    stat = path.stat()
    newer = pd.DataFrame({"a": [7, 8, 9]})
    _write(other, ["t", "one"], newer)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same modification time
    pd.testing.assert_frame_equal(_read(store, ["t", "one"]), newer)


EXIT_AFTER_A_READ = """
import os, sys
import pandas, pyarrow  # imported once, before the forks
from depmesh.artifacts import frame_from_parquet
payload = open(sys.argv[1], "rb").read()
aborted, child = 0, False
for _ in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:
        child = True
        break
    aborted += os.WIFSIGNALED(os.waitpid(pid, 0)[1])
if child:
    frame_from_parquet(payload)  # then the interpreter exits as any command or step process does
else:
    print("aborted", aborted)
"""


def test_a_process_that_read_a_stored_table_exits_cleanly(tmp_path):
    """Reading Parquet from a Python file object (io.BytesIO) let pyarrow release it from a worker thread while
    the interpreter exited: SIGABRT, "terminate called without an active exception". It killed CI's container
    check after it had succeeded, and in forked processes it struck about two exits in five. Every table, sample
    and snapshot read goes through frame_from_parquet; thirty processes that each read one exit cleanly."""
    import subprocess
    import sys

    path = tmp_path / "table.parquet"
    pd.DataFrame({"a": range(5000), "b": [str(i) for i in range(5000)]}).to_parquet(path, index=False)
    out = subprocess.run([sys.executable, "-c", EXIT_AFTER_A_READ, str(path), "30"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "aborted 0", (out.stdout, out.stderr[-1000:])
