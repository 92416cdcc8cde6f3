"""The one ``defs`` that workspace.yaml loads: the mesh in DEPMESH_CATALOG,
or the flights demo mesh when that is not set."""

from __future__ import annotations

import os

from depmesh.build import build_definitions
from depmesh.catalog import load_catalog
from depmesh.examples import DEMO_CATALOG

defs = build_definitions(load_catalog(os.environ.get("DEPMESH_CATALOG") or DEMO_CATALOG))
