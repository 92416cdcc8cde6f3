"""Example meshes shipped with depmesh."""

from pathlib import Path

DEMO_CATALOG = Path(__file__).parent / "flights" / "catalog.yaml"
CLINIC_CATALOG = Path(__file__).parent / "clinic" / "catalog.yaml"  # a second, small domain
PENGUINS_CATALOG = Path(__file__).parent / "penguins" / "catalog.yaml"  # three classes, a classifier feeding a regressor
