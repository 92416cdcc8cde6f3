"""`depmesh ...`: a thin command line over the library functions tests call.

One module per command group: ``mesh`` (validate, show, run, dev, worker,
doctor), ``analysis`` (impact, simulate, contracts), ``registry`` (release,
registry); ``common`` holds the options and the error style they share,
``render`` how results read on a terminal. Running a mesh is
``depmesh.runs``, a library module."""

from depmesh.cli import (  # noqa: F401 - each registers its commands on main
    analysis,
    audit,
    deps,
    failure_modes,
    lineage,
    mesh,
    online,
    registry,
    rollout,
    serving,
    teams,
    trace,
    tracking,
    tuning,
)
from depmesh.cli.app import main
from depmesh.cli.render import mermaid

__all__ = ["main", "mermaid"]
