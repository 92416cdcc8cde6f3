"""Assets: the factory that turns a mesh spec into Dagster assets, and their storage."""

from depmesh.assets.factory import (
    MeshRuntime,
    NodeContext,
    asset_key,
    build_asset,
    build_assets,
)
from depmesh.assets.io import MeshIOManager, MeshStore

__all__ = ["MeshIOManager", "MeshRuntime", "MeshStore", "NodeContext", "asset_key", "build_asset", "build_assets"]
