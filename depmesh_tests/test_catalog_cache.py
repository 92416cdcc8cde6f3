"""The compiled-catalog cache: an unchanged catalog skips validation; any
change to it, to the modules its entrypoints come from, or to depmesh's
catalog code validates it again; only a private folder is trusted."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap
import time
from pathlib import Path

import pytest

from depmesh.catalog import CatalogError, cache, load_catalog
from depmesh.catalog import load as catalog_load

MODULE = textwrap.dedent("""
    from depmesh.examples.synthetic import combine, source  # noqa: F401
""")


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """A private cache folder, a catalog whose compute comes from a module of the test's own, and a
    counter of full validations."""
    monkeypatch.setenv("DEPMESH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DEPMESH_CATALOG_CACHE", raising=False)
    package = tmp_path / "code"
    package.mkdir()
    module_name = f"cache_probe_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"
    (package / f"{module_name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(package))
    catalog = tmp_path / "mesh.yaml"
    catalog.write_text(textwrap.dedent(f"""
        mesh: cached
        nodes:
          - {{name: raw/a, kind: dataset, owner: team:a, compute: "{module_name}:source"}}
          - {{name: features/b, kind: features, owner: team:a, inputs: [raw/a], compute: "{module_name}:combine"}}
    """))
    parses = []
    real = catalog_load._parse

    def counting(text, path):
        parses.append(path)
        return real(text, path)

    monkeypatch.setattr(catalog_load, "_parse", counting)
    return catalog, package / f"{module_name}.py", parses, tmp_path / "cache"


def test_an_unchanged_catalog_is_validated_once(cached):
    catalog, _, parses, folder = cached
    first = load_catalog(catalog)
    second = load_catalog(catalog)
    assert len(parses) == 1
    assert second == first and second.path == catalog
    assert [p.name for p in (folder / "catalogs").iterdir()] == [f"{cache.key_of(catalog.read_bytes(), catalog)}.pickle"]
    assert oct((folder / "catalogs").stat().st_mode & 0o777) == "0o700"


def test_a_changed_catalog_or_entrypoint_module_is_validated_again(cached):
    catalog, module, parses, _ = cached
    load_catalog(catalog)
    catalog.write_text(catalog.read_text().replace("owner: team:a, inputs", "owner: team:b, inputs"))
    assert load_catalog(catalog).node("features/b").owner == "team:b"
    assert len(parses) == 2
    # the trainer's module loses the function the catalog names: the cache must not hide it
    module.write_text("from depmesh.examples.synthetic import source  # noqa: F401\n# combine removed\n")
    sys.modules.pop(module.stem, None)
    with pytest.raises(CatalogError, match="combine"):
        load_catalog(catalog)
    assert len(parses) == 3


def test_damaged_or_planted_entries_are_never_trusted(cached, tmp_path):
    catalog, _, parses, folder = cached
    load_catalog(catalog)
    entry = next((folder / "catalogs").iterdir())
    entry.write_bytes(cache.FORMAT + b"\x80\x05truncated")
    assert load_catalog(catalog).name == "cached"  # validated again, and the entry replaced
    assert len(parses) == 2
    load_catalog(catalog)
    assert len(parses) == 2

    # a pickle that would run code, planted where others can write: never loaded
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    entry.write_bytes(cache.FORMAT + pickle.dumps((cache.key_of(catalog.read_bytes(), catalog), {}, Exploit())))
    os.chmod(folder / "catalogs", 0o777)
    assert load_catalog(catalog).name == "cached"
    assert not marker.exists() and len(parses) == 3
    os.chmod(folder / "catalogs", 0o700)
    os.chmod(entry, 0o666)  # the file itself writable by others
    assert load_catalog(catalog).name == "cached"
    assert not marker.exists() and len(parses) == 4


@pytest.mark.parametrize("content", [
    lambda key: (key, "not a mapping of modules", None),
    lambda key: (key, {}, "not a mesh"),
    lambda key: (key, {"os": "a module state that never matches"}, None),
    lambda key: ("only", "two"),
    lambda key: {"key": key},
])
def test_a_damaged_entry_with_a_valid_header_is_replaced_not_fatal(cached, content):
    """An entry that unpickles (valid header, a private file) but does not hold (key, modules, mesh) is a miss:
    the catalog is validated again and the entry replaced (every command failed until it was deleted)."""
    catalog, _, parses, folder = cached
    load_catalog(catalog)
    entry = next((folder / "catalogs").iterdir())
    entry.write_bytes(cache.FORMAT + pickle.dumps(content(cache.key_of(catalog.read_bytes(), catalog))))
    assert load_catalog(catalog).name == "cached"
    assert len(parses) == 2
    assert load_catalog(catalog).name == "cached" and len(parses) == 2  # replaced: a hit again


def test_the_cache_can_be_turned_off(cached, monkeypatch):
    catalog, _, parses, folder = cached
    monkeypatch.setenv("DEPMESH_CATALOG_CACHE", "0")
    load_catalog(catalog)
    load_catalog(catalog)
    assert len(parses) == 2 and not folder.exists()


def test_an_invalid_catalog_is_not_cached(cached, write_catalog):
    _, _, parses, folder = cached
    bad = write_catalog("mesh: x\nnodes:\n  - {name: raw/a, kind: dataset, owner: team:a, compute: nope:nothing}\n")
    for _ in range(2):
        with pytest.raises(CatalogError):
            load_catalog(bad)
    assert len(parses) == 2


def test_a_process_reuses_the_mesh_job_only_while_its_catalog_folder_is_unchanged(tmp_path, write_catalog):
    """Step processes and Celery pool processes call depmesh.runs.mesh_job for
    every step: the job is built once per process, and again when the catalog
    or a file beside it (teams.yaml, failure_modes.yaml) changed."""
    from depmesh.runs import mesh_job

    catalog = write_catalog("mesh: memo\nnodes:\n"
                            "  - {name: raw/a, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source}\n")
    first = mesh_job(str(catalog), 0.5, "in_process")
    assert mesh_job(str(catalog), 0.5, "in_process") is first
    assert mesh_job(str(catalog), 0.25, "in_process") is not first  # other run settings, another job
    again = mesh_job(str(catalog), 0.5, "in_process")
    (catalog.parent / "notes.yaml").write_text("a file beside the catalog\n")
    assert mesh_job(str(catalog), 0.5, "in_process") is not again
    catalog.write_text(catalog.read_text() + "  - {name: raw/b, kind: dataset, owner: team:a, "
                                             "compute: depmesh.examples.synthetic:source}\n")
    rebuilt = mesh_job(str(catalog), 0.5, "in_process")
    assert {n.to_user_string() for n in rebuilt.asset_layer.executable_asset_keys} >= {"raw/a", "raw/b"}


def test_the_cache_keeps_the_most_recently_used_entries(cached, monkeypatch, write_catalog):
    catalog, _, parses, folder = cached
    monkeypatch.setattr(cache, "KEEP", 3)
    load_catalog(catalog)  # the entry in use
    for i in range(5):
        time.sleep(0.02)  # modification times a file system can tell apart
        load_catalog(write_catalog(f"mesh: other{i}\nnodes:\n  - {{name: raw/a, kind: dataset, owner: team:a, "
                                   "compute: depmesh.examples.synthetic:source}\n", name=f"m{i}.yaml"))
        time.sleep(0.02)
        load_catalog(catalog)  # used again: kept
    assert len(list((folder / "catalogs").glob("*.pickle"))) == 3
    before = len(parses)
    load_catalog(catalog)
    assert len(parses) == before  # still cached
