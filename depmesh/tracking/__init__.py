"""Experiment tracking: every training recorded (depmesh.tracking.recorder),
queried and compared (store, query, compare), and rebuilt from its recipe
(recipe, snapshots, reproduce)."""
