"""Vocabulary: the names of tags, metadata keys and checks that several layers share (no imports, nothing heavy).

Started with serving (#24); the rest of the project's keys move here with the layering work (#26)."""

SERVED_CHECK = "served_set"  # every scores node's blocking check: it served the set the catalog's serving: declares
SERVING_KEY = "depmesh/serving"  # a scores materialization's metadata: what served it (JSON)
SERVED_BY_KEY = "depmesh/served_by"  # ... the same in one sentence, first on the asset page
SIGNATURE_KEY = "depmesh/serving_signature"  # ... and its digest (what a re-score compares with the registry)
RESCORE_TAG = "depmesh/rescore"  # a re-score run's tag: the key of what it re-scores (revision and stale nodes)
REVISION_TAG = "depmesh/registry_revision"  # ... and the registry revision it was requested for
SERVING_REVISION_KEY = "depmesh/registry_revision"  # the serving/<mesh> page's metadata: the revision it read
FRESHNESS_CHECK = "freshness_check"  # Dagster's last-update freshness check on a node whose contract bounds its age
