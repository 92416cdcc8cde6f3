"""Experiment tracking: every training recorded (depmesh.tracking.recorder),
queried and compared (store, query, compare), and rebuilt from its recipe
(recipe, snapshots, reproduce)."""

# the statuses a recorded training can have (here, not in store.py: the command line names them without
# importing SQLAlchemy)
STATUSES = ("registered", "rejected", "failed", "trial", "pruned")
