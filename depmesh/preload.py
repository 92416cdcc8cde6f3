"""Imported once by the multiprocess executor's forkserver so that every step
process forks with Dagster, pandas and scikit-learn already loaded (a step
process that imported them itself would spend seconds on it). Great
Expectations is not among them: contracts are answered by
depmesh.contracts.fast, and GX is imported only by a step whose contract has a
rule the fast path leaves to it. Nothing else imports this module."""

import json
import os

import dagster  # noqa: F401
import pandas  # noqa: F401
import pyarrow.parquet  # noqa: F401
import sklearn.cluster  # noqa: F401
import sklearn.ensemble  # noqa: F401
import sklearn.pipeline  # noqa: F401

import depmesh.assets  # noqa: F401
import depmesh.build  # noqa: F401
import depmesh.execution  # noqa: F401
from depmesh.runs import PRELOAD_JOB_ENV, mesh_job

# The run's job, built once here: every step process forks with it and
# depmesh.runs.mesh_job returns it without building the definitions again
# (it checks the catalog is unchanged). A failure here is the step's to report.
_job = os.environ.get(PRELOAD_JOB_ENV)
if _job:
    try:
        mesh_job(**json.loads(_job))
    except Exception:  # noqa: BLE001 - each step builds (and fails) on its own then
        pass
