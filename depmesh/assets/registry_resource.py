"""The registry as a Dagster resource: SQLite beside the instance, or
PostgreSQL with DAGSTER_POSTGRES_URL; migrated on first use. One mesh's
view of it (the catalog's ``mesh:`` name), verifying artifacts in the
instance's store, governed by the mesh's policy (depmesh.governance)."""

from __future__ import annotations

import threading
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

from depmesh.registry.store import DEFAULT_MESH, Registry, default_url, open_registry

_lock = threading.Lock()

__all__ = ["RegistryResource", "open_registry"]


class RegistryResource(ConfigurableResource):
    """``url`` empty: the default for the instance (see depmesh.registry.store.default_url).
    ``artifacts_dir`` empty: the instance's artifact store. ``catalog``: the mesh whose policy (teams.yaml beside
    it, its dependency policy) governs promotions and rollbacks made through this resource; empty: the policy of a
    mesh with neither (dependency conflicts are still refused)."""

    url: str = ""
    mesh: str = DEFAULT_MESH
    artifacts_dir: str = ""
    catalog: str = ""
    _registry: Registry | None = PrivateAttr(default=None)
    _where: tuple[str, str] | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Where the registry is; it is opened on first use, so a step that never reads it pays nothing."""
        from depmesh.assets.io import artifacts_location

        url, artifacts_dir = self.url, self.artifacts_dir
        if not url or not artifacts_dir:
            if context.instance is None:
                raise RuntimeError("the registry resource needs a Dagster instance or an explicit url and artifacts_dir")
            url = url or default_url(Path(context.instance.root_directory))
            artifacts_dir = artifacts_dir or str(artifacts_location(context.instance))
        self._where = (url, artifacts_dir)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._registry is not None:
            self._registry.dispose()

    @property
    def registry(self) -> Registry:
        from depmesh.artifacts import ArtifactStore
        from depmesh.governance import govern, open_governed

        assert self._where is not None, "resource not set up"
        with _lock:
            opened = self._registry
        if opened is None:
            url, artifacts_dir = self._where
            if self.catalog:
                from depmesh.catalog import load_catalog

                opened = open_governed(url, load_catalog(self.catalog), ArtifactStore(artifacts_dir))
            else:
                opened = govern(open_registry(url, self.mesh, ArtifactStore(artifacts_dir)), None, None)
            self._registry = opened
        return opened
