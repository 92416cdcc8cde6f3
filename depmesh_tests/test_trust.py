"""Identities that cannot be borrowed, approvals that cannot be forged, an audit trail that shows tampering, and
governance the registry remembers (issue #25)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from depmesh.assets.registry_resource import open_registry
from depmesh.catalog import load_catalog
from depmesh.cli import main
from depmesh.examples import DEMO_CATALOG
from depmesh.registry.schema import (
    approvals,
    audit_events,
    promotion_requests,
    stage_transitions,
)
from depmesh.registry.store import default_url
from depmesh_tests.conftest import approve_release, copy_of, fresh_database


def cli(*args: str, code: int = 0) -> str:
    out = CliRunner().invoke(main, list(args))
    assert out.exit_code == code, (args, out.output, out.exception)
    assert "Traceback" not in out.output
    return out.output


@pytest.fixture
def home(golden_home):
    return golden_home


def keys_for(people: list[str], folder: Path) -> dict[str, tuple[Path, str]]:
    """person -> (private key file in OpenSSH form, public key line), made here."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for person in people:
        key = Ed25519PrivateKey.generate()
        private = folder / f"{person}_ed25519"
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        out[person] = (private, public.decode() + f" {person}@test")
    return out


def signed_catalog(folder: Path, keys: dict[str, tuple[Path, str]], required: bool = True) -> Path:
    """The flights catalog with teams.yaml giving each owner a key (and ``signatures: required``)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_CATALOG, folder / "catalog.yaml")
    shutil.copy(DEMO_CATALOG.parent / "failure_modes.yaml", folder / "failure_modes.yaml")
    data = yaml.safe_load((DEMO_CATALOG.parent / "teams.yaml").read_text())
    for team in data["teams"].values():
        for person, roles in list(team["members"].items()):
            if person in keys:
                team["members"][person] = {"roles": roles, "key": keys[person][1]}
    if required:
        data["signatures"] = "required"
    (folder / "teams.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder / "catalog.yaml"


OWNERS = ["ana", "chen", "eli", "fay", "hana", "ivo", "kai"]


def test_signed_approvals_refuse_a_missing_a_forged_and_a_replayed_signature(home, golden, tmp_path):
    keys = keys_for(OWNERS, tmp_path / "keys")
    catalog = signed_catalog(tmp_path / "mesh", keys)
    where = ["--catalog", str(catalog), "--home", str(home)]
    out = cli("release", "request", str(golden.release_id), *where, "--actor", "gus", "--reason", "go")
    request_id = int(out.split()[2])
    # missing: a mesh that requires signatures refuses an unsigned approval
    refused = cli("release", "approve", str(request_id), *where, "--actor", "eli", "--reason", "ok", code=1)
    assert "requires signed approvals" in refused
    # forged: signed with someone else's key
    refused = cli("release", "approve", str(request_id), *where, "--actor", "eli", "--reason", "ok",
                  "--key", str(keys["hana"][0]), code=1)
    assert "does not verify against eli's key" in refused
    # replayed: eli's genuine signature over another request (another release id) does not carry over
    from depmesh.governance.approvals import get_request
    from depmesh.signing import payload, sign

    registry = open_registry(default_url(home), "flights")
    request = get_request(registry, request_id)
    elsewhere = payload(registry, {**request, "id": request_id + 1}, actor="eli")
    registry.dispose()
    refused = cli("release", "approve", str(request_id), *where, "--actor", "eli", "--reason", "ok",
                  "--signature", sign(keys["eli"][0], elsewhere), code=1)
    assert "does not verify" in refused
    # the payload printed for signing elsewhere is what a valid signature covers
    printed = cli("release", "payload", str(request_id), *where, "--actor", "eli").strip().encode()
    assert json.loads(printed)["release"] == golden.release_id
    assert "approved by eli" in cli("release", "approve", str(request_id), *where, "--actor", "eli", "--reason", "ok",
                                    "--signature", sign(keys["eli"][0], printed))
    for person in ("hana", "kai", "ivo"):
        out = cli("release", "approve", str(request_id), *where, "--actor", person, "--reason", "ok",
                  "--key", str(keys[person][0]))
    assert f"release {golden.release_id} is Production" in out
    with open_registry(default_url(home), "flights").engine.connect() as conn:
        signatures = conn.execute(sa.select(approvals.c.signature).where(approvals.c.request_id == request_id)).all()
    assert len(signatures) == 4 and all(s.signature for s in signatures)


def test_a_signature_stops_holding_when_the_request_it_approved_changes(home, golden, tmp_path):
    """Every approval signed and valid, then the request's impact (the teams it was asked of) is edited in the
    database before the promotion: the signatures no longer verify for the request as it is, nothing is promoted."""
    keys = keys_for(OWNERS, tmp_path / "keys")
    catalog = signed_catalog(tmp_path / "mesh", keys)
    mesh = load_catalog(catalog)
    from depmesh.governance.approvals import decide, request_promotion
    from depmesh.signing import payload, sign
    from depmesh.teams import load_teams

    teams = load_teams(mesh)
    registry = open_registry(default_url(home), "flights")
    request = request_promotion(registry, mesh, teams, golden.release_id, actor="gus", reason="go")
    while request["status"] == "pending":
        person = request["waiting_for"][0]["owners"][0]
        request = decide(registry, teams, request["id"], actor=person, reason="ok", approve=True,
                         signature=sign(keys[person][0], payload(registry, request, actor=person)))
    assert request["status"] == "approved"
    impact = [r for r in request["required"] if r["team"] != "team:airport-operations"]
    for entry in impact:
        entry.pop("owners", None)
    with registry.engine.begin() as conn:
        conn.execute(promotion_requests.update().where(promotion_requests.c.id == request["id"])
                     .values(required=json.dumps(impact)))
    registry.dispose()
    refused = cli("release", "promote", str(golden.release_id), "--catalog", str(catalog), "--home", str(home),
                  "--actor", "eli", "--reason", "go", code=1)
    assert refused.count("signed but the signature does not verify") == 4, refused


def test_an_approval_inserted_by_hand_promotes_nothing(home, golden, tmp_path):
    """Without signatures: approval rows and an 'approved' status written straight into the database are not
    in the audit trail's chain, so the promotion is refused and names them. With signatures required, even a
    writer who also appends correctly chained audit events is refused: the approvals are not signed."""
    where = ["--home", str(home)]
    out = cli("release", "request", str(golden.release_id), *where, "--actor", "gus", "--reason", "go")
    request_id = int(out.split()[2])
    registry = open_registry(default_url(home), "flights")
    from depmesh.governance.approvals import get_request

    request = get_request(registry, request_id)
    with registry.engine.begin() as conn:
        for entry in request["required"]:
            conn.execute(approvals.insert().values(request_id=request_id, actor=entry["owners"][0],
                                                   decision="approve", teams=json.dumps([entry["team"]]),
                                                   reason="inserted", at=request["created_at"]))
        conn.execute(promotion_requests.update().where(promotion_requests.c.id == request_id)
                     .values(status="approved"))
    refused = cli("release", "promote", str(golden.release_id), *where, "--actor", "eli", "--reason", "go", code=1)
    assert "is not in the audit trail as made" in refused
    assert registry.production() == {}
    # the writer also appends chained audit events (it can: the chain has no secret), on a mesh that signs
    keys = keys_for(OWNERS, tmp_path / "keys")
    catalog = signed_catalog(tmp_path / "mesh", keys)
    from depmesh.notify import audit

    with registry.engine.begin() as conn:
        for entry in request["required"]:
            audit(conn, "flights", entry["owners"][0], "approved", f"release:{golden.release_id}", "inserted",
                  request=request_id, teams=[entry["team"]], request_status="approved")
    cli("teams", "adopt", "--catalog", str(catalog), *where, "--actor", "eli", "--reason", "we sign now")
    refused = cli("release", "promote", str(golden.release_id), "--catalog", str(catalog), *where,
                  "--actor", "eli", "--reason", "go", code=1)
    assert "is not signed" in refused and registry.production() == {}
    registry.dispose()


def test_a_catalog_copy_without_teams_cannot_change_stages_once_the_mesh_declared_them(home, golden, tmp_path):
    """Governance is remembered by the registry: a copy of the catalog with no teams.yaml (or another one) may
    not promote or roll back; adopting a changed declaration takes an owner under the recorded one, audited."""
    approve_release(home, golden.release_id)
    cli("release", "promote", str(golden.release_id), "--home", str(home), "--actor", "eli", "--reason", "go")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(DEMO_CATALOG, bare / "catalog.yaml")
    where = ["--catalog", str(bare / "catalog.yaml"), "--home", str(home)]
    for args in (["release", "rollback", "--actor", "mallory", "--reason", "x"],
                 ["release", "rollback", "--node", "models/route_segment", "--actor", "mallory", "--reason", "x"]):
        refused = cli(*args, *where, code=1)
        assert "declared its teams" in refused and "without a teams declaration" in refused, refused
    # another teams.yaml (mallory made herself an owner): refused too, and mallory may not adopt it
    (bare / "teams.yaml").write_text((DEMO_CATALOG.parent / "teams.yaml").read_text().replace(
        "      ana: [owner, on-call]", "      ana: [owner, on-call]\n      mallory: [owner, on-call]"))
    refused = cli("release", "rollback", *where, "--actor", "mallory", "--reason", "x", code=1)
    assert "is not the one the registry recorded" in refused
    refused = cli("teams", "adopt", *where, "--actor", "mallory", "--reason", "mine now", code=1)
    assert "'mallory' is not an owner under the recorded teams declaration" in refused
    # an owner under the recorded declaration adopts it: audited, and then it governs
    cli("teams", "adopt", *where, "--actor", "ana", "--reason", "mallory joins ingestion")
    registry = open_registry(default_url(home), "flights")
    from depmesh.notify import audit_trail

    actions = [e["action"] for e in audit_trail(registry, "mesh:flights")]
    assert actions == ["governance_declared", "governance_changed"]
    registry.dispose()


# -- the hash chain --------------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def chained(request, golden, tmp_path, monkeypatch):
    """A registry with stage changes and audit events in its chains, on SQLite or PostgreSQL: (home, url)."""
    home = tmp_path / "home"
    with copy_of(golden, home):
        pass
    if request.param == "sqlite":
        url = default_url(home)
        approve_release(home, golden.release_id)
        yield home, url
        return
    server = request.getfixturevalue("postgres_server_url")
    with fresh_database(server) as url:
        from depmesh.registry import Registry

        source = Registry(default_url(home), mesh="flights")
        target = Registry(url, mesh="flights")
        target.migrate()
        copy_rows(source.engine, target.engine)
        source.dispose()
        target.dispose()
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)  # the registry of this home is now that database
        approve_release(home, golden.release_id)
        yield home, url


def copy_rows(source, target) -> None:
    from depmesh.registry.schema import metadata

    with source.connect() as src, target.begin() as dst:
        for table in metadata.sorted_tables:
            if table.name in ("mesh_state",):
                dst.execute(table.delete())
            rows = [dict(r._mapping) for r in src.execute(sa.select(table))]
            if rows:
                dst.execute(table.insert(), rows)
        if target.dialect.name == "postgresql":
            for table in metadata.sorted_tables:
                if "id" in table.c and isinstance(table.c.id.type, sa.Integer):
                    dst.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                        f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"))


def test_the_audit_chain_names_an_edited_a_deleted_and_a_reordered_row(chained, tmp_path):
    home, url = chained
    engine = sa.create_engine(url)
    where = ["--home", str(home)]
    assert "the audit trail verifies" in cli("audit", "verify", *where)
    kept = tmp_path / "head.json"
    kept.write_text(cli("audit", "head", *where))
    with engine.connect() as conn:
        stage_ids = [r.id for r in conn.execute(sa.select(stage_transitions.c.id).order_by(stage_transitions.c.id))]
        event_ids = [r.id for r in conn.execute(sa.select(audit_events.c.id).order_by(audit_events.c.id))]
    assert len(stage_ids) >= 4 and len(event_ids) >= 3

    def broken(change) -> str:
        with engine.begin() as conn:
            saved_s = [dict(r._mapping) for r in conn.execute(sa.select(stage_transitions))]
            saved_e = [dict(r._mapping) for r in conn.execute(sa.select(audit_events))]
            change(conn)
        out = CliRunner().invoke(main, ["audit", "verify", *where, "--head", str(kept)])
        with engine.begin() as conn:  # put it back for the next case
            conn.execute(stage_transitions.delete())
            conn.execute(audit_events.delete())
            conn.execute(stage_transitions.insert(), saved_s)
            conn.execute(audit_events.insert(), saved_e)
        assert out.exit_code == 1, out.output
        return out.output

    edited = stage_ids[2]
    out = broken(lambda c: c.execute(stage_transitions.update().where(stage_transitions.c.id == edited)
                                     .values(actor="mallory")))
    assert f"stage_transitions row {edited} was edited" in out
    deleted = event_ids[1]
    out = broken(lambda c: c.execute(audit_events.delete().where(audit_events.c.id == deleted)))
    assert f"audit_events row {event_ids[2]} does not follow row {event_ids[0]}" in out

    def swap(conn):  # two rows' contents exchanged, hashes and all (a reorder)
        a, b = (dict(conn.execute(sa.select(stage_transitions).where(stage_transitions.c.id == i)).one()._mapping)
                for i in stage_ids[1:3])
        for row, other in ((a, b), (b, a)):
            conn.execute(stage_transitions.update().where(stage_transitions.c.id == row["id"])
                         .values(**{k: v for k, v in other.items() if k != "id"}))
    out = broken(swap)
    assert f"stage_transitions row {stage_ids[1]}" in out and f"stage_transitions row {stage_ids[2]}" in out
    newest = event_ids[-1]
    out = broken(lambda c: c.execute(audit_events.delete().where(audit_events.c.id == newest)))
    assert "1 of the newest rows were deleted since the head was kept" in out
    assert "the audit trail verifies" in cli("audit", "verify", *where, "--head", str(kept))
    engine.dispose()


# -- doctor: changes nothing, prints no secret -----------------------------------------------------------------
def _doctor(home: Path, **env: str) -> str:
    out = CliRunner().invoke(main, ["doctor", "--home", str(home)], env=env)
    assert out.exit_code in (0, 1), (out.output, out.exception)
    assert "Traceback" not in out.output and (out.exception is None or isinstance(out.exception, SystemExit)), \
        out.exception
    return out.output


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_doctor_changes_nothing_on_an_empty_instance_or_database(tmp_path, postgres_server_url):
    from depmesh.instance import prepare_home

    home = tmp_path / "home"
    prepare_home(home)
    before = _tree(home)
    assert "history/runs.db" not in before  # nothing opened it yet
    _doctor(home)
    assert _tree(home) == before
    with fresh_database(postgres_server_url) as url:
        pg_home = tmp_path / "pg"
        pg_home.mkdir()
        (pg_home / "dagster.yaml").write_text("storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_POSTGRES_URL\n")
        out = _doctor(pg_home, DAGSTER_POSTGRES_URL=url)
        assert "has no Dagster tables yet" in out
        engine = sa.create_engine(url)
        assert sa.inspect(engine).get_table_names() == []  # it created none
        engine.dispose()


@pytest.mark.parametrize("variable, value, secrets, words", [
    ("DAGSTER_POSTGRES_URL", "postgresql://postgres:s3cr@tpassw0rd@127.0.0.1:5432/test", ["s3cr@tpassw0rd", "tpassw0rd"],
     "percent-encoded as %40"),
    ("DAGSTER_POSTGRES_URL", "host=127.0.0.1 user=postgres password=hunter2secret dbname=test", ["hunter2secret"],
     "keyword DSN"),
    ("DEPMESH_STORAGE_URL", "s3://AKIAEXAMPLEKEY:wJalrXUtnFEMIsecret@bucket/prefix", ["wJalrXUtnFEMIsecret"],
     "carries credentials"),
    ("DEPMESH_STORAGE_URL", "s3://bucket/prefix?X-Amz-Security-Token=tok3nvalue42", ["tok3nvalue42"], "storage"),
])
def test_doctor_never_prints_a_secret_of_a_url(golden, tmp_path, variable, value, secrets, words):
    home = tmp_path / "home"
    with copy_of(golden, home):
        pass
    env = {variable: value, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    out = _doctor(home, **env)
    for secret in secrets:
        assert secret not in out, out
    assert words in out, out


# -- bounded input: every probe ends in a named error, exit 1 or 2, no traceback -------------------------------
def _refused(args: list[str], words: str) -> str:
    out = CliRunner().invoke(main, args)
    assert out.exit_code in (1, 2), (args[:3], out.exit_code, out.output[-500:], out.exception)
    assert isinstance(out.exception, SystemExit) and "Traceback" not in out.output, out.exception
    assert words in out.output, out.output[-1000:]
    return out.output


def _lying_zip(path: Path, inflated: int, claimed: int = 100, encrypted: bool = False) -> None:
    """A zip whose one .json entry inflates to ``inflated`` bytes while both its headers claim ``claimed``."""
    import struct
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("advisory.json", b" " * inflated)
    data = bytearray(path.read_bytes())
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, claimed)  # local header: uncompressed size
    struct.pack_into("<I", data, central + 24, claimed)  # central directory: uncompressed size
    if encrypted:
        for offset in (local + 6, central + 8):  # general purpose flag: bit 0, encrypted
            struct.pack_into("<H", data, offset, struct.unpack_from("<H", data, offset)[0] | 1)
    path.write_bytes(bytes(data))


PEAK = """
import sys
from depmesh.deps.audit import AuditError, load_advisories
try:
    load_advisories(sys.argv[1])
    print("read")
except AuditError as exc:
    print("refused:", exc)
# VmHWM: this process image's own peak (ru_maxrss would carry the forking pytest's peak)
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


def test_hostile_advisory_archives_are_refused_by_name(golden, tmp_path):
    import subprocess
    import sys

    where = ["deps", "audit", "--home", str(golden.home), "--osv"]
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    _lying_zip(bomb / "osv.zip", inflated=400_000_000)  # 400 MB of spaces, ~400 KB deflated; headers claim 100 bytes
    _refused([*where, str(bomb)], "not a readable zip archive")
    # read in a process of its own, whose peak memory is its own: the entry was never inflated whole
    out = subprocess.run([sys.executable, "-c", PEAK, str(bomb)], capture_output=True, text=True, timeout=300)
    said, peak_kb = out.stdout.strip().splitlines()
    assert said.startswith("refused:") and int(peak_kb) < 250_000, (said, peak_kb)
    honest = tmp_path / "honest"
    honest.mkdir()
    _lying_zip(honest / "osv.zip", inflated=3_000_000, claimed=3_000_000)
    _refused([*where, str(honest)], "more than an advisory holds")
    locked = tmp_path / "locked"
    locked.mkdir()
    _lying_zip(locked / "osv.zip", inflated=50, claimed=50, encrypted=True)
    _refused([*where, str(locked)], "encrypted")
    odd = tmp_path / "odd"
    odd.mkdir()
    _lying_zip(odd / "osv.zip", inflated=50, claimed=50)
    data = bytearray((odd / "osv.zip").read_bytes())
    for offset in (data.find(b"PK\x03\x04") + 8, data.find(b"PK\x01\x02") + 10):  # compression method: 97
        data[offset:offset + 2] = (97).to_bytes(2, "little")
    (odd / "osv.zip").write_bytes(bytes(data))
    _refused([*where, str(odd)], "compression this reader does not support")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "osv.zip").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    _refused([*where, str(bad)], "not a readable zip archive")
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "a.json").write_text("[" * 200_000 + "]" * 200_000)
    _refused([*where, str(deep)], "nested too deeply")


def test_hostile_query_and_trace_arguments_are_refused_by_name(golden, tmp_path):
    home = ["--home", str(golden.home)]
    _refused(["runs", "list", *home, "--sort", "metrics.mae; DROP TABLE x"], "name one field")
    _refused(["runs", "list", *home, "--sort", ",".join(["metrics.mae"] * 60_000)], "name one field")
    _refused(["runs", "list", *home, "--where", "metrics.mae > " + "-" * 1000 + "1"], "nests more than 40 levels")
    _refused(["runs", "list", *home, "--where", "(" * 300 + "metrics.mae" + ")" * 300 + " > 1"], "--where")
    _refused(["trace", "scores/dep_delay", "1e400", *home], "is not a int64 value")
    _refused(["trace", "scores/dep_delay", "flight_id=1," * 1000, *home], "at most 2000")


def test_hostile_files_are_refused_before_they_are_read(tmp_path):
    _refused(["validate", "/dev/zero"], "not a regular file")
    big = tmp_path / "catalog.yaml"
    with open(big, "wb") as handle:
        handle.write(b"# " + b"x" * 6_000_000 + b"\n")
    _refused(["validate", str(big)], "larger than 5,000,000 bytes")
    # failure-mode commands beside an invalid teams.yaml: the teams file is named
    folder = tmp_path / "mesh"
    folder.mkdir()
    shutil.copy(DEMO_CATALOG, folder / "catalog.yaml")
    shutil.copy(DEMO_CATALOG.parent / "failure_modes.yaml", folder / "failure_modes.yaml")
    (folder / "teams.yaml").write_text("mesh: flights\nteams:\n  ingestion: {members: {ana: [boss]}}\n")
    for command in ("list", "validate", "coverage"):
        _refused(["failure-modes", command, "--catalog", str(folder / "catalog.yaml")], "unknown role 'boss'")


def test_advisory_bounds_fixed_is_safe_and_last_affected_is_affected():
    """OSV: a version equal to a ``fixed`` bound is not affected; one equal to ``last_affected`` is."""
    from depmesh.deps.audit import affects

    def advisory(events):
        return {"id": "GHSA-x", "affected": [{"package": {"ecosystem": "PyPI", "name": "numpy"},
                                              "ranges": [{"type": "ECOSYSTEM", "events": events}]}]}

    fixed = advisory([{"introduced": "1.0"}, {"fixed": "2.0"}])
    assert affects(fixed, "numpy", "1.9.9") is not None
    assert affects(fixed, "numpy", "2.0") is None
    assert affects(fixed, "numpy", "0.9") is None
    last = advisory([{"introduced": "1.0"}, {"last_affected": "2.0"}])
    assert affects(last, "numpy", "2.0") is not None
    assert affects(last, "numpy", "2.0.1") is None
    assert affects(advisory([{"introduced": "0"}, "junk", {"fixed": 3}]), "numpy", "1.0") is not None


# -- catches that held only by wording, and planted bugs nothing caught -----------------------------------------
def test_an_owner_who_asked_may_not_approve_their_own_request(home, golden):
    """eli owns team:delay-models, which must approve; eli asked, so eli's approval is refused (an owner: only
    the requester rule refuses it), and hana's is not."""
    where = ["--home", str(home)]
    out = cli("release", "request", str(golden.release_id), *where, "--actor", "eli", "--reason", "mine")
    request_id = int(out.split()[2])
    assert "team:delay-models (eli, fay)" in out  # eli is an owner of a team that must approve
    refused = cli("release", "approve", str(request_id), *where, "--actor", "eli", "--reason", "ok", code=1)
    assert "'eli' asked for promotion request" in refused
    assert "approved by fay" in cli("release", "approve", str(request_id), *where, "--actor", "fay", "--reason", "ok")


def test_an_incident_is_one_per_mode_node_and_version(tmp_path, demo_mesh):
    """Seen again at the same version: counted, not new, no second notification. Seen at a new version: a new
    incident, notified."""
    from depmesh.failure_modes.catalogue import load_failure_modes
    from depmesh.failure_modes.incidents import list_incidents, record_incident
    from depmesh.registry import Registry
    from depmesh.registry.schema import notifications
    from depmesh.teams import load_teams

    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}", mesh="flights")
    registry.migrate()
    catalogue = load_failure_modes(demo_mesh)
    teams = load_teams(demo_mesh)
    mode = catalogue.modes[0]
    seen = dict(node="raw/weather", source="check", detector="raw/weather:contract", run_id="r1", summary="x")
    first, new1 = record_incident(registry, teams, mode, version="v1", **seen)
    again, new2 = record_incident(registry, teams, mode, version="v1", **seen)
    other, new3 = record_incident(registry, teams, mode, version="v2", **seen)
    assert (new1, new2, new3) == (True, False, True)
    assert again["id"] == first["id"] and again["count"] == 2 and other["id"] != first["id"] and other["count"] == 1
    assert len(list_incidents(registry, mode=mode.id)) == 2
    with registry.engine.connect() as conn:
        sent = conn.execute(sa.select(notifications.c.payload).where(notifications.c.event == "incident")).all()
    assert sorted(json.loads(r.payload)["version"] for r in sent) == ["v1", "v2"]
    registry.dispose()


def test_a_webhook_error_that_quotes_the_url_is_stored_and_shown_without_its_tokens(golden, tmp_path, monkeypatch):
    """A receiver whose error names the URL it was called at (as many do): the error is kept, its tokens are not."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(500, f"no hook at http://{self.headers['Host']}{self.path}")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}/services/T0001/B0002/PathToken42?token=QueryToken42"
        monkeypatch.setenv("DEPMESH_WEBHOOK_DELAY_MODELS", url)
        home = tmp_path / "home"
        with copy_of(golden, home):
            out = cli("release", "request", str(golden.release_id), "--home", str(home), "--actor", "gus",
                      "--reason", "weekly")
            listed = cli("notifications", "list", "--home", str(home), "--format", "json")
        [error] = [n["last_error"] for n in json.loads(listed) if n["team"] == "team:delay-models"]
        assert "HTTP Error 500: no hook at" in error, error
        for secret in ("PathToken42", "QueryToken42"):
            assert secret not in listed and secret not in out
    finally:
        server.shutdown()
        server.server_close()


def test_a_stale_source_fails_its_freshness_check_and_is_fm_stale(demo_mesh, tmp_path):
    """raw/flights's contract allows a week: last materialized eight days ago, Dagster's freshness check on it
    fails, and the failure-mode catalogue reads that failure as FM-STALE; materialized now, it passes."""
    import time

    from dagster import (
        AssetKey,
        AssetMaterialization,
        AssetSelection,
        DagsterEvent,
        DagsterEventType,
        Definitions,
        EventLogEntry,
        define_asset_job,
        instance_for_test,
    )
    from dagster._core.events import StepMaterializationData

    from depmesh.automation.freshness import build_freshness_checks
    from depmesh.failure_modes.catalogue import load_failure_modes

    checks, sensor = build_freshness_checks(demo_mesh)
    assert sensor is not None and [spec.key.name for c in checks for spec in c.check_specs] == ["freshness_check"]
    job = define_asset_job("stale_probe", selection=AssetSelection.checks(*checks))
    defs = Definitions(asset_checks=checks, jobs=[job])
    key = AssetKey(["raw", "flights"])

    def materialized(instance, seconds_ago: float) -> None:
        event = DagsterEvent(DagsterEventType.ASSET_MATERIALIZATION.value, "stale_probe",
                             event_specific_data=StepMaterializationData(AssetMaterialization(key)))
        instance.store_event(EventLogEntry(error_info=None, level="INFO", user_message="", run_id="",
                                           timestamp=time.time() - seconds_ago, dagster_event=event))

    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        materialized(instance, 8 * 86400)
        result = defs.resolve_job_def("stale_probe").execute_in_process(instance=instance)
        [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.asset_key == key and evaluation.passed is False
        catalogue = load_failure_modes(demo_mesh)
        assert [m.id for m in catalogue.detecting("raw/flights", "freshness_check", evaluation.description or "")] \
            == ["FM-STALE"]
        materialized(instance, 60)
        result = defs.resolve_job_def("stale_probe").execute_in_process(instance=instance)
        assert [e.passed for e in result.get_asset_check_evaluations()] == [True]


def test_catalog_errors_point_at_the_field_and_name_the_node(tmp_path):
    from depmesh.catalog import CatalogError

    def problems(text: str) -> list[str]:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(CatalogError) as info:
            load_catalog(path)
        return [str(p) for p in info.value.problems]

    assert problems("") == ["c.yaml: expected a mapping with 'mesh' and 'nodes' at the top, got nothing (the file "
                            "or value is empty)"]
    assert "got a list" in problems("- a\n")[0]
    node = ("mesh: m\nnodes:\n  - name: raw/a\n    kind: dataset\n    owner: a@b.c\n"
            "    compute: depmesh.examples.flights.sources:load_airlines\n")
    found = problems(node + "    owner: b@c.d\n")
    assert "c.yaml:7: node raw/a: duplicate key 'owner'" in found, found
    found = problems(node + "  - name: features/b\n    kind: features\n    owner: a@b.c\n"
                     "    compute: depmesh.examples.flights.sources:load_airlines\n"
                     "    params: {}\n    inputs:\n      - raw/a\n      - raw/nope\n")
    assert "c.yaml:12: node features/b: field inputs: input 'raw/nope' is not declared in this catalog" in found, found


def test_a_row_pointing_at_another_models_intact_bundle_fails_promotion_release_show_and_doctor(home, golden):
    """Every hash matches (the bundle is intact): only the model and version inside the bundle tell that the row
    points at the wrong one. Promotion refuses it, release show and doctor name it."""
    from depmesh.registry.schema import model_versions

    approve_release(home, golden.release_id)
    registry = open_registry(default_url(home), "flights")
    members = registry.release(golden.release_id)["members"]
    own = registry.version("models/arr_delay", members["models/arr_delay"])["artifact_hash"]
    other = registry.version("models/dep_delay", members["models/dep_delay"])["artifact_hash"]
    where = (model_versions.c.node == "models/arr_delay") & (model_versions.c.version == members["models/arr_delay"])

    def point_at(digest: str) -> None:
        with registry.engine.begin() as conn:
            conn.execute(model_versions.update().where(where).values(artifact_hash=digest))

    said = f"holds models/dep_delay@{members['models/dep_delay']}, not models/arr_delay@{members['models/arr_delay']}"
    point_at(other)
    refused = cli("release", "promote", str(golden.release_id), "--home", str(home), "--actor", "eli",
                  "--reason", "go", code=1)
    assert said in refused, refused
    assert said in cli("release", "show", str(golden.release_id), "--home", str(home))
    point_at(own)  # made Production while the row was right, then changed: doctor names it
    cli("release", "promote", str(golden.release_id), "--home", str(home), "--actor", "eli", "--reason", "go")
    point_at(other)
    out = CliRunner().invoke(main, ["doctor", "--home", str(home)])
    assert out.exit_code == 1 and said in out.output, out.output
    registry.dispose()


@pytest.mark.parametrize("url, secrets", [
    ("https://bot:Us3rinfoToken@hooks.example.com/x", ["Us3rinfoToken"]),
    ("https://hooks.example.com/services/T0001/B0002/PathTokenXYZ", ["PathTokenXYZ"]),
    ("https://hooks.example.com/hook?token=QueryTokenXYZ&x=1", ["QueryTokenXYZ"]),
    ("https://bot:p%40ss%2Fw0rdTok@hooks.example.com/x", ["p@ss/w0rdTok", "p%40ss%2Fw0rdTok"]),
])
def test_scrub_takes_every_secret_shape_out_of_a_webhook_error(url, secrets):
    from depmesh.redact import safe_url, scrub

    for secret in secrets:
        text = f"failed posting to {url}: the server said {secret!r} is unknown; decoded {secret}"
        assert secret not in scrub(text, url), scrub(text, url)
    assert all(secret not in safe_url(url) for secret in secrets)


@pytest.mark.parametrize("url, secrets, kept", [
    ("postgresql://app:S3cretPassw0rd@db.internal:5432/registry", ["S3cretPassw0rd"], "db.internal:5432/registry"),
    ("postgresql://app:has%40at%3Acolon@db:5432/r", ["has@at:colon", "has%40at%3Acolon"], "db:5432/r"),
    ("s3://bucket/prefix?X-Amz-Security-Token=T0kenValue42&region=eu", ["T0kenValue42"], "s3://bucket/prefix"),
])
def test_database_and_storage_urls_keep_their_path_and_lose_their_credentials(url, secrets, kept):
    from depmesh.redact import mask_credentials, shown_url

    shown = shown_url(url)
    said = mask_credentials(f"could not connect to {url} (password {secrets[0]!r} refused)", url)
    for secret in secrets:
        assert secret not in shown and secret not in said, (shown, said)
    assert kept in shown


def test_the_chain_head_is_sent_to_every_team_and_verifies_against_the_registry(home, webhooks, tmp_path):
    """`audit head --notify` posts the head to each team's webhook: a copy outside the database, which
    `audit verify --head` then holds the registry to."""
    printed = json.loads(cli("audit", "head", "--home", str(home), "--notify"))
    received = webhooks.to("ingestion")
    assert [body["event"] for body in received] == ["audit_head"]
    kept = {k: received[0][k] for k in ("mesh", "heads")}
    assert kept["heads"] == printed["heads"] and printed["verified"] is True
    assert {"features", "delay-models", "customer-ops"} <= {p.strip("/") for p in webhooks.paths}
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    assert "extends the kept head" in cli("audit", "verify", "--home", str(home), "--head", str(tmp_path / "kept.json"))
