"""A tamper-evident audit trail: the registry's stage changes
(``stage_transitions``) and its requests, approvals, rejections, rollout
steps and governance changes (``audit_events``) are two hash chains per mesh.

Each row stores ``prev_hash`` (the hash of the mesh's previous row in that
table, or 64 zeros for the first) and ``row_hash`` = sha256 of a canonical
JSON of the chain's name, the row's id, ``prev_hash`` and every column. So:

- a row edited in place no longer hashes to its ``row_hash``;
- a row deleted, or rows reordered (ids or contents swapped), breaks the
  link: the next row's ``prev_hash`` is not the hash of the row before it;
- deleting the *newest* rows leaves a shorter chain that still verifies on
  its own: it is caught against a copy of the head kept elsewhere
  (``depmesh audit head`` prints it, ``--notify`` sends it to the teams'
  webhooks; ``depmesh audit verify --head`` compares).

What it does not protect against: someone who can write the database *and*
recomputes every hash after an edit (the chain has no secret) — only a head
kept outside the database catches that, from the first changed row on; and
signed approvals (depmesh.signing) are what make an approval
impossible to forge by such a writer.

Appends are serialized: stage changes under the mesh's state lock
(depmesh.registry.store), audit events under a per-mesh advisory lock on
PostgreSQL (SQLite serializes every write transaction).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from depmesh.registry.schema import audit_events, stage_transitions

GENESIS = "0" * 64
CHAINS = {"stages": stage_transitions, "events": audit_events}
FIELDS = {
    "stages": ("mesh", "node", "version", "from_stage", "to_stage", "actor", "reason", "run_id", "release_id", "at"),
    "events": ("mesh", "at", "actor", "action", "subject", "reason", "details"),
}


def _value(value: Any) -> Any:
    if isinstance(value, datetime):  # SQLite gives naive UTC back, PostgreSQL aware: one form for both
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def digest(chain: str, row: Mapping[str, Any], prev: str) -> str:
    payload = {"chain": chain, "id": int(row["id"]), "prev": prev,
               **{field: _value(row.get(field)) for field in FIELDS[chain]}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
                          .encode("utf-8")).hexdigest()


def _lock_key(mesh: str, chain: str) -> int:
    return int.from_bytes(hashlib.sha256(f"depmesh-chain:{chain}:{mesh}".encode()).digest()[:8], "big", signed=True)


def _last(conn: Any, table: Any, mesh: str) -> str:
    found = conn.execute(sa.select(table.c.row_hash).where(table.c.mesh == mesh).order_by(table.c.id.desc())
                         .limit(1)).first()
    return found.row_hash if found is not None and found.row_hash else GENESIS


def append(conn: Any, chain: str, values: Mapping[str, Any]) -> int:
    """Insert one row into ``chain``'s table as the mesh's newest link; its id."""
    table = CHAINS[chain]
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(values["mesh"], chain)})
    prev = _last(conn, table, values["mesh"])
    row_id = conn.execute(table.insert().values(**values, prev_hash=prev)).inserted_primary_key[0]
    conn.execute(table.update().where(table.c.id == row_id)
                 .values(row_hash=digest(chain, {**values, "id": row_id}, prev)))
    return int(row_id)


def audit(conn: Any, mesh: str, actor: str, action: str, subject: str, reason: str, **details: Any) -> int:
    """One audit event, appended to the mesh's hash chain inside the caller's transaction; its id."""
    return append(conn, "events", dict(mesh=mesh, at=datetime.now(UTC), actor=actor, action=action, subject=subject,
                                       reason=reason, details=json.dumps(details, default=str, sort_keys=True)))


def rechain(conn: Any, mesh: str | None = None) -> int:
    """Hash every row in id order (the migration that introduced the chain). Rows written before it are
    vouched for from that moment on, not before. Returns the rows hashed."""
    count = 0
    for chain, table in CHAINS.items():
        columns = ["id", *dict.fromkeys(("mesh", *FIELDS[chain]))]  # what this revision knows, whatever comes later
        query = sa.select(*[table.c[c] for c in columns]).order_by(table.c.id)
        if mesh is not None:
            query = query.where(table.c.mesh == mesh)
        heads: dict[str, str] = {}
        for row in conn.execute(query).mappings().all():
            prev = heads.get(row["mesh"], GENESIS)
            link = digest(chain, row, prev)
            conn.execute(table.update().where(table.c.id == row["id"]).values(prev_hash=prev, row_hash=link))
            heads[row["mesh"]] = link
            count += 1
    return count


def verify(conn: Any, mesh: str) -> dict[str, Any]:
    """Walk both chains of ``mesh``. {"ok", "problems": [text naming the row], "heads": {chain: {rows, head,
    last_id}}}."""
    problems: list[str] = []
    heads: dict[str, Any] = {}
    for chain, table in CHAINS.items():
        prev, rows, last_id = GENESIS, 0, None
        for row in conn.execute(sa.select(table).where(table.c.mesh == mesh).order_by(table.c.id)).mappings():
            rows += 1
            where = f"{table.name} row {row['id']}"
            if not row["row_hash"]:
                problems.append(f"{where} has no hash: it was inserted without the chain (by hand?)")
                prev = digest(chain, row, prev)
                last_id = row["id"]
                continue
            if row["prev_hash"] != prev:
                problems.append(f"{where} does not follow "
                                + (f"row {last_id}" if last_id is not None else "the start of the chain")
                                + ": a row between them was deleted, or rows were reordered or inserted")
            if digest(chain, row, row["prev_hash"] or GENESIS) != row["row_hash"]:
                problems.append(f"{where} was edited: its content no longer hashes to its row_hash "
                                f"({row['row_hash'][:12]})")
            prev, last_id = row["row_hash"], row["id"]
        heads[chain] = {"rows": rows, "head": prev, "last_id": last_id}
    return {"ok": not problems, "problems": problems, "heads": heads}


def kept_head_problems(conn: Any, mesh: str, current: Mapping[str, Any], kept: Mapping[str, Any]) -> list[str]:
    """What a head kept elsewhere (``audit head`` output) says about the chain now: rows deleted from its end, or
    the chain rewritten up to the kept length (the row at that length is not the one the head names)."""
    out = []
    for chain, then in (kept.get("heads") or {}).items():
        now = (current.get("heads") or {}).get(chain)
        if chain not in CHAINS or now is None or then["rows"] <= 0:
            continue
        name = CHAINS[chain].name
        if now["rows"] < then["rows"]:
            out.append(f"{name}: {then['rows'] - now['rows']} of the newest rows were deleted since the head was "
                       f"kept ({then['rows']} rows then, {now['rows']} now)")
            continue
        row = conn.execute(sa.select(CHAINS[chain].c.row_hash).where(CHAINS[chain].c.mesh == mesh)
                           .order_by(CHAINS[chain].c.id).offset(then["rows"] - 1).limit(1)).first()
        if row is not None and row.row_hash != then["head"]:
            out.append(f"{name}: row {then['rows']} is not the one the kept head names (head {then['head'][:12]} "
                       f"then, {(row.row_hash or '')[:12]} now): the chain was rewritten up to there")
    return out
