"""The registry's tables (SQLAlchemy Core). Changes go through a migration in
migrations/versions, never through create_all."""

from __future__ import annotations

import sqlalchemy as sa

STAGES = ("Development", "Staging", "Production", "Archived")

metadata = sa.MetaData()

model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False, server_default=""),
    sa.Column("node", sa.String(300), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("rejected", sa.Boolean, nullable=False, server_default=sa.false()),  # removed by a rollback
    sa.Column("artifact_hash", sa.String(64), nullable=False),
    sa.Column("artifact_path", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),  # JSON
    sa.Column("gates", sa.Text, nullable=False),  # JSON: gate -> {passed, figures}
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("input_versions", sa.Text, nullable=False),  # JSON: input -> data version
    sa.Column("upstream_models", sa.Text, nullable=False),  # JSON: model -> version it was trained against
    sa.Column("code_version", sa.String(64), nullable=False),
    sa.Column("library_versions", sa.Text, nullable=False),  # JSON
    sa.Column("card", sa.Text, nullable=False),  # markdown
    # JSON: how to rebuild it (depmesh.tracking.recipe): lock, commit, diff, input snapshots, seed, params
    sa.Column("recipe", sa.Text, nullable=True),
    # JSON: what it needs to load and predict (depmesh.deps.needs): direct and closure {dist: locked version}
    sa.Column("requirements", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("mesh", "node", "version", name="uq_model_versions_mesh_node_version"),
)

stage_transitions = sa.Table(
    "stage_transitions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False, server_default=""),
    sa.Column("node", sa.String(300), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("from_stage", sa.String(20), nullable=True),
    sa.Column("to_stage", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("release_id", sa.Integer, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    # the mesh's hash chain (depmesh.registry.chain, migration 0009): the previous row's hash, and this row's
    sa.Column("prev_hash", sa.String(64), nullable=True),
    sa.Column("row_hash", sa.String(64), nullable=True),
)

releases = sa.Table(
    "releases", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False, server_default=""),
    # Staging | Production | PartlyRolledBack | Superseded | RolledBack
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("replaced_release_id", sa.Integer, nullable=True),  # the Production release it replaced
)

release_members = sa.Table(
    "release_members", metadata,
    sa.Column("release_id", sa.Integer, sa.ForeignKey("releases.id"), primary_key=True),
    sa.Column("node", sa.String(300), primary_key=True),
    sa.Column("version", sa.String(64), nullable=False),
)

# One row per mesh: which release is Production, and a revision every stage
# change bumps. Every stage change locks this row first (SELECT ... FOR UPDATE
# on PostgreSQL; SQLite's BEGIN IMMEDIATE locks the whole file), so stage
# changes of one mesh are serialized, and a compare-and-swap on the revision
# refuses a decision taken on a stale view.
mesh_state = sa.Table(
    "mesh_state", metadata,
    sa.Column("mesh", sa.String(200), primary_key=True),
    sa.Column("production_release_id", sa.Integer, nullable=True),
    sa.Column("revision", sa.Integer, nullable=False),
)

# Every training (tracked by depmesh.tracking): passed, rejected by its gates,
# failed, or a tuning trial (pruned included). JSON columns hold mappings.
trainings = sa.Table(
    "trainings", metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # uuid4 hex
    sa.Column("mesh", sa.String(200), nullable=False),
    sa.Column("node", sa.String(300), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # registered | rejected | failed | trial | pruned
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("trigger", sa.String(200), nullable=False),  # cli, ui, schedule:<name>, sensor:<name>, tune, ...
    sa.Column("tags", sa.Text, nullable=False),  # JSON
    sa.Column("params", sa.Text, nullable=False),  # JSON: every parameter of the fitted estimator, defaults included
    sa.Column("declared_params", sa.Text, nullable=False),  # JSON: the catalog's (or the trial's) parameters
    sa.Column("seed", sa.Integer, nullable=True),
    sa.Column("metrics", sa.Text, nullable=False),  # JSON
    sa.Column("model_version", sa.String(64), nullable=True),
    sa.Column("code_version", sa.String(64), nullable=False),
    sa.Column("git_commit", sa.String(64), nullable=True),
    sa.Column("diff_sha256", sa.String(64), nullable=True),  # a blob: the uncommitted changes at training time
    sa.Column("lock_sha256", sa.String(64), nullable=True),  # a blob: the lock file
    sa.Column("catalog_sha256", sa.String(64), nullable=True),  # a blob: the catalog file
    sa.Column("library_versions", sa.Text, nullable=False),  # JSON
    sa.Column("input_versions", sa.Text, nullable=False),  # JSON: input -> data or model version
    sa.Column("inputs", sa.Text, nullable=False),  # JSON: input -> {kind, sha256}: the content-addressed snapshot
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("peak_memory_mb", sa.Float, nullable=True),
    sa.Column("study", sa.String(300), nullable=True),
    sa.Column("trial", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_trainings_mesh_started", "mesh", "started_at"),
    sa.Index("ix_trainings_mesh_node_started", "mesh", "node", "started_at"),
)

# The curves of a training: one row per series (e.g. "train/mae", "validation/mae").
training_curves = sa.Table(
    "training_curves", metadata,
    sa.Column("training_id", sa.String(32), sa.ForeignKey("trainings.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("series", sa.String(100), primary_key=True),
    sa.Column("steps", sa.Text, nullable=False),  # JSON list of iteration numbers
    sa.Column("values", sa.Text, nullable=False),  # JSON list of floats
)

# Content-addressed texts a recipe refers to: lock files, diffs, catalogs.
blobs = sa.Table(
    "blobs", metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)

# Failure-mode drills (depmesh.failure_modes.drills): caught or missed, by which checks, how long.
drills = sa.Table(
    "drills", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(200), nullable=False),
    sa.Column("injection", sa.Text, nullable=False),
    sa.Column("caught", sa.Boolean, nullable=False),
    sa.Column("caught_by", sa.Text, nullable=False),  # JSON list of node:check
    sa.Column("also_fired", sa.Text, nullable=False),
    sa.Column("missed_by", sa.Text, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

ACTOR_MAX = 200  # stage_transitions.actor; checked before writing, on SQLite too

# Incidents (depmesh.failure_modes.incidents): a failure mode seen at a node's
# version, by a failed check or a failed run; one row per (mode, node, version),
# counted when it is seen again, so its owner team is notified once.
incidents = sa.Table(
    "incidents", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False),
    sa.Column("mode", sa.String(200), nullable=False),
    sa.Column("node", sa.String(300), nullable=False),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("source", sa.String(20), nullable=False),  # check | run_failure
    sa.Column("detector", sa.String(300), nullable=False),  # node:check, or node:run_failure
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("mesh", "mode", "node", "version", name="uq_incidents_mode_node_version"),
)

# Notifications to teams' webhooks, written in the transaction of the change
# they announce (an outbox) and delivered after it: a webhook that fails is
# retried a bounded number of times and never blocks or undoes the change.
notifications = sa.Table(
    "notifications", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False),
    sa.Column("team", sa.String(200), nullable=False),
    sa.Column("event", sa.String(50), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON
    sa.Column("status", sa.String(20), nullable=False),  # pending | sending | sent | failed | no-webhook
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_notifications_status", "status"),
)

# Promotion requests and their approvals (depmesh.governance.approvals).
promotion_requests = sa.Table(
    "promotion_requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False),
    sa.Column("release_id", sa.Integer, nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    # pending | approved | rejected | promoted | rolled_back | void (a spare that outlived its release's promotion)
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("required", sa.Text, nullable=False),  # JSON: [{team, nodes, why}]
    sa.Column("rollout", sa.String(20), nullable=True),  # canary: the last approval starts a canary, not a promotion
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    # at most one open (pending or approved) request per release: migration 0008
    sa.Index("ux_promotion_requests_open", "mesh", "release_id", unique=True,
             sqlite_where=sa.text("status IN ('pending', 'approved')"),
             postgresql_where=sa.text("status IN ('pending', 'approved')")),
)

approvals = sa.Table(
    "approvals", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.Integer, sa.ForeignKey("promotion_requests.id"), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("decision", sa.String(20), nullable=False),  # approve | reject
    sa.Column("teams", sa.Text, nullable=False),  # JSON: the required teams this decision speaks for
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    # ed25519 over the request's payload (depmesh.signing), base64; None when unsigned (migration 0009)
    sa.Column("signature", sa.Text, nullable=True),
)

# The audit trail of everything that is not a stage transition: requests,
# approvals, rejections, rollout steps, webhook give-ups.
audit_events = sa.Table(
    "audit_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),  # release:3, request:2, ...
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON
    sa.Column("prev_hash", sa.String(64), nullable=True),  # the hash chain, as on stage_transitions
    sa.Column("row_hash", sa.String(64), nullable=True),
    sa.Index("ix_audit_events_mesh_subject", "mesh", "subject"),
)

# The governance a mesh declared (teams.yaml), remembered by the registry: stage changes made without it are
# refused whatever catalog file a command is pointed at; adopting a changed or removed declaration is audited.
mesh_governance = sa.Table(
    "mesh_governance", metadata,
    sa.Column("mesh", sa.String(200), primary_key=True),
    sa.Column("teams_sha256", sa.String(64), nullable=True),  # None: governance was removed (an audited change)
    sa.Column("policy", sa.Text, nullable=False),  # JSON: {teams, owners, on_call, signatures}
    sa.Column("declared_by", sa.String(200), nullable=False),
    sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
)

# Rollouts of a release (depmesh.rollout.serving): shadow (the candidate scores beside Production, unseen) or
# canary (a growing share of rows, by a hash of the catalog's key), one active per mesh.
rollouts = sa.Table(
    "rollouts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False),
    sa.Column("release_id", sa.Integer, nullable=False),
    sa.Column("mode", sa.String(20), nullable=False),  # shadow | canary
    sa.Column("status", sa.String(20), nullable=False),  # active | completed | rolled_back | stopped
    sa.Column("step", sa.Integer, nullable=False),  # index into the plan's steps (canary)
    sa.Column("plan", sa.Text, nullable=False),  # JSON: the catalog's rollout spec when it started
    sa.Column("candidates", sa.Text, nullable=False),  # JSON: model -> {production, candidate} versions
    sa.Column("started_by", sa.String(200), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),  # why it ended
)

# What each scoring run saw per model and arm during a rollout step.
rollout_metrics = sa.Table(
    "rollout_metrics", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("node", sa.String(300), nullable=False),  # the scores node
    sa.Column("model", sa.String(300), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("figures", sa.Text, nullable=False),  # JSON: per arm rows, labelled, metric, errors, seconds; shift...
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_rollout_metrics_rollout_step", "rollout_id", "step"),
)

# Waivers of known vulnerabilities for promotion (depmesh.deps.audit): who accepted which advisory, and why.
dependency_waivers = sa.Table(
    "dependency_waivers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("mesh", sa.String(200), nullable=False),
    sa.Column("advisory", sa.String(200), nullable=False),
    sa.Column("package", sa.String(200), nullable=False),
    sa.Column("release_id", sa.Integer, nullable=True),  # None: every release
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
