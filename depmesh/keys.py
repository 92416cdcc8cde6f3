"""Vocabulary: the names of tags, metadata keys and checks that several layers share (no imports, nothing heavy).

Resource keys, run tags, metadata keys and check names: any module may import this one; it imports nothing."""

SERVED_CHECK = "served_set"  # every scores node's blocking check: it served the set the catalog's serving: declares
SERVING_KEY = "depmesh/serving"  # a scores materialization's metadata: what served it (JSON)
SERVED_BY_KEY = "depmesh/served_by"  # ... the same in one sentence, first on the asset page
SIGNATURE_KEY = "depmesh/serving_signature"  # ... and its digest (what a re-score compares with the registry)
RESCORE_TAG = "depmesh/rescore"  # a re-score run's tag: the key of what it re-scores (revision and stale nodes)
REVISION_TAG = "depmesh/registry_revision"  # ... and the registry revision it was requested for
SERVING_REVISION_KEY = "depmesh/registry_revision"  # the serving/<mesh> page's metadata: the revision it read
POSTGRES_ENV = "DAGSTER_POSTGRES_URL"  # the one setting that moves Dagster's storage and the registry to PostgreSQL
FRESHNESS_CHECK = "freshness_check"  # Dagster's last-update freshness check on a node whose contract bounds its age

# resources, pools and the step's output (depmesh.assets.factory)
IO_MANAGER_KEY = "mesh_io"
REGISTRY_KEY = "mesh_registry"
DRILL_FAULT_TAG = "depmesh/drill_fault"  # a run tag: "kill-step:NODE" kills that node's step (failure-mode drills)
RUNTIME_KEY = "mesh_runtime"
TRAINING_POOL = "depmesh_training"
OUTPUT = "result"  # the one output of each node's step
TRAINING_KEY = "depmesh/training_id"  # a model's metadata: its tracked training (depmesh runs show ID)
JUDGED_KEY = "depmesh/judged_version"  # a check's metadata: the data or model version it judged
STORED_KEY = "depmesh/stored"  # ... and whether that version was stored (False: a blocking verdict withheld it)
BLOCKING_KEY = "depmesh/blocking"  # ... and whether its failure withholds the output and stops what is downstream
BLOCKED_TAG = "depmesh/blocked"  # a run's tag: the nodes whose blocking checks failed in it, and which checks
NOT_RUN_KEY = "depmesh/not_run"  # an observation on a node that did not run: why
TRIGGER_TAG = "depmesh/trigger"  # what started a run: cli, ui, schedule:<name>, sensor:<name>, backfill
PARAMS_TAG = "depmesh/params"  # a run's tag: JSON {node: {param: value}} overriding the catalog's (a tuned candidate)
SAMPLE_IGNORED_KEY = "depmesh/sample"
STUDY_TAG = "depmesh/study"
TRIAL_TAG = "depmesh/trial"
