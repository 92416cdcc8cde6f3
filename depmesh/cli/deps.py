"""Dependency governance: `depmesh deps show | check | licenses | sbom | audit | waive | container`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from depmesh.cli.app import main
from depmesh.cli.common import FORMAT_OPTION, table
from depmesh.cli.registry import (
    ACTOR_OPTION,
    HOME_OPTION,
    REG_CATALOG_OPTION,
    acting,
    governed_registry,
    registry_call,
)

LOCK_OPTION = click.option("--lock", type=click.Path(dir_okay=False, exists=True),
                           help="The lock file (default: uv.lock of the project depmesh runs from).")


def _lock(path: str | None) -> dict:
    from depmesh.deps.needs import default_lock, read_lock

    chosen = Path(path) if path else default_lock()
    if not chosen.is_file():
        raise click.UsageError(f"no lock file at {chosen}: give --lock FILE")
    return read_lock(str(chosen.resolve()))


def _release_or_production(registry, release_id: int | None) -> dict:
    if release_id is None:
        release_id = registry.state()["production_release_id"]
        if release_id is None:
            releases = registry.releases()
            if not releases:
                raise click.ClickException(f"no releases of mesh {registry.mesh} yet (depmesh run)")
            release_id = releases[-1]["id"]
    return registry_call(lambda: registry.release(release_id))


def _versions(registry, release: dict) -> dict:
    return {node: registry.version(node, version) or {} for node, version in release["members"].items()}


@main.group()
def deps() -> None:
    """What each model version needs, and whether co-deployed versions, licenses and advisories allow it."""


@deps.command("show")
@click.argument("model", metavar="MODEL[@VERSION]")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def deps_show(model: str, catalog: str | None, home: str | None, fmt: str) -> None:
    """The libraries a model version needs to load and predict (from its trainer's imports and its artifact's
    types), at the versions of the lock it was trained under, with the lock's closure; default: the Production
    version, else the newest."""
    _, _, registry = governed_registry(home, catalog, read_only=True)
    node, _, version = model.partition("@")
    if not version:
        version = registry.production().get(node) or next(
            (v["version"] for v in reversed(registry.versions(node))), "")
    record = registry.version(node, version) if version else None
    if record is None:
        raise click.ClickException(f"no registered version {model} in mesh {registry.mesh} (see: depmesh registry "
                                   f"history {node})")
    needs = record.get("requirements")
    if needs is None:
        raise click.ClickException(f"{node}@{version} was registered before depmesh recorded requirements "
                                   "(migration 0007): retrain it to record them")
    if fmt == "json":
        click.echo(json.dumps({"node": node, "version": version, "stage": record["stage"], **needs}, indent=2))
        return
    click.echo(f"{node}@{version} ({record['stage']}), trained under Python {needs['python']}: "
               f"{len(needs['direct'])} libraries needed directly, {len(needs['closure'])} with what they need")
    trainer, artifact = _providers(needs, "trainer"), _providers(needs, "artifact")
    click.echo(table([[d, v, ", ".join(w for w, hit in (("trainer's imports", d in trainer),
                                                      ("artifact's types", d in artifact)) if hit)]
                      for d, v in needs["direct"].items()], ["library", "locked version", "needed by"]))
    click.echo("with what they need (the lock's closure): "
               + ", ".join(f"{d} {v}" for d, v in needs["closure"].items() if d not in needs["direct"]))
    if needs.get("unresolved"):
        click.echo(f"modules with no locked distribution: {', '.join(needs['unresolved'])}")


def _providers(needs: dict, source: str) -> set[str]:
    from depmesh.deps.needs import distributions_of

    return {d for dists in distributions_of(set(needs["sources"][source])).values() for d in dists}


@deps.command("check")
@click.argument("release_id", type=click.IntRange(1, 2**63 - 1), required=False, metavar="[RELEASE]")
@REG_CATALOG_OPTION
@HOME_OPTION
@FORMAT_OPTION
def deps_check(release_id: int | None, catalog: str | None, home: str | None, fmt: str) -> None:
    """Can the release's models load in one environment? Conflicts between members (refused at record and
    promotion) and members trained under another major.minor than this serving environment. Exit 1 on either."""
    from depmesh.deps.check import installed, member_conflicts, serving_mismatches

    _, _, registry = governed_registry(home, catalog, read_only=True)
    release = _release_or_production(registry, release_id)
    needs = {n: v.get("requirements") for n, v in _versions(registry, release).items()}
    missing = sorted(n for n, r in needs.items() if r is None)
    libraries = sorted({lib for r in needs.values() if r for lib in r["closure"]})
    conflicts = member_conflicts({n: r for n, r in needs.items() if r})
    mismatches = serving_mismatches({n: r for n, r in needs.items() if r}, installed(libraries))
    found = {"release": release["id"], "conflicts": conflicts, "serving_mismatches": mismatches,
             "not_recorded": missing}
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
    else:
        click.echo(f"release {release['id']}: {len(needs)} models, {len(libraries)} libraries")
        for c in conflicts:
            click.echo(f"CONFLICT {c['library']}: " + ", ".join(f"{n} {v}" for n, v in c["versions"].items()))
        for m in mismatches:
            click.echo(f"SERVING {m['node']} was trained with {m['library']} {m['trained']}, this environment has "
                       f"{m['serving'] or 'none'}")
        if missing:
            click.echo(f"requirements not recorded (registered before 0007): {', '.join(missing)}")
        if not conflicts and not mismatches:
            click.echo("every member loads in one environment, and in this one")
    sys.exit(1 if conflicts or mismatches else 0)


@deps.command("licenses")
@REG_CATALOG_OPTION
@LOCK_OPTION
@click.option("--strict", is_flag=True, help="Unknown licenses fail too.")
@FORMAT_OPTION
def deps_licenses(catalog: str | None, lock: str | None, strict: bool, fmt: str) -> None:
    """Every locked package with its license (SPDX where the metadata allows), judged against the catalog's
    dependencies.licenses policy. Exit 1 on a denied or not-allowed license (and, --strict, an unknown one)."""
    from depmesh.cli.common import load_mesh
    from depmesh.deps.licenses import scan

    mesh = load_mesh(catalog)
    rows = scan(_lock(lock), mesh.dependencies)
    bad = [r for r in rows if r["verdict"] in ("denied", "not allowed") or (strict and r["verdict"] == "unknown")]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(table([[r["package"], r["version"], r["spdx"] or f"? ({(r['raw'] or 'none')[:40]})", r["source"],
                           r["verdict"]] for r in rows], ["package", "version", "license (SPDX)", "from", "verdict"]))
        unknown = sum(r["verdict"] == "unknown" for r in rows)
        click.echo(f"\n{len(rows)} packages: {len(bad)} refused by the policy, {unknown} with no SPDX license")
    sys.exit(1 if bad else 0)


@deps.command("sbom")
@click.argument("release_id", type=click.IntRange(1, 2**63 - 1), required=False, metavar="[RELEASE]")
@REG_CATALOG_OPTION
@HOME_OPTION
@LOCK_OPTION
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the SBOM here (default: stdout).")
def deps_sbom(release_id: int | None, catalog: str | None, home: str | None, lock: str | None,
              output: str | None) -> None:
    """A CycloneDX 1.6 JSON bill of materials of a release (default: Production's)."""
    from depmesh.deps.sbom import release_sbom

    mesh, _, registry = governed_registry(home, catalog, read_only=True)
    release = _release_or_production(registry, release_id)
    document = release_sbom(mesh.name, release, _versions(registry, release), _lock(lock))
    if output:
        Path(output).write_text(document, encoding="utf-8")
        click.echo(output)
    else:
        click.echo(document)


@deps.command("audit")
@click.option("--osv", "osv_dir", type=click.Path(file_okay=False),
              help="A directory of OSV advisories (JSON, or .zip bulk exports); default: the catalog's "
                   "dependencies.audit.advisories.")
@click.option("--online", is_flag=True, help="Ask pip-audit's PyPI service instead (needs the network and pip-audit).")
@REG_CATALOG_OPTION
@HOME_OPTION
@LOCK_OPTION
@FORMAT_OPTION
def deps_audit(osv_dir: str | None, online: bool, catalog: str | None, home: str | None, lock: str | None,
               fmt: str) -> None:
    """The locked versions against published advisories: findings per package, the model versions that need it,
    the releases that hold them. Exit 1 on a finding at or above the catalog's block severity."""
    from depmesh.deps.audit import (
        AuditError,
        at_or_above,
        audit,
        audit_online,
        load_advisories,
        per_model,
    )

    mesh, _, registry = governed_registry(home, catalog, read_only=True)
    locked = {name: p["version"] for name, p in _lock(lock).items()}
    try:
        if online:
            findings = audit_online(locked)
        else:
            source = osv_dir or (mesh.dependencies.advisories if mesh.dependencies else None)
            if not source:
                raise click.UsageError("no advisories: --osv DIR, --online, or dependencies.audit.advisories")
            findings = audit(locked, load_advisories(source))
    except AuditError as exc:
        raise click.ClickException(str(exc)) from None
    needs = {f"{v['node']}@{v['version']}": v.get("requirements") for v in registry.versions()
             if v["stage"] in ("Staging", "Production")}
    findings = per_model(needs, findings)
    live = [r for r in registry.releases() if r["status"] in ("Staging", "Production")]
    for f in findings:
        f["releases"] = sorted(r["id"] for r in live if any(f"{n}@{v}" in f["models"] for n, v in r["members"].items()))
    threshold = mesh.dependencies.block_severity if mesh.dependencies else "high"
    blocking = [f for f in findings if at_or_above(f["severity"], threshold)]
    if fmt == "json":
        click.echo(json.dumps(findings, indent=2))
    else:
        click.echo(table([[f["package"], f["version"], f["advisory"], f["severity"], ", ".join(f["fixed"]) or "-",
                           ", ".join(f["models"]) or "-", ", ".join(map(str, f["releases"])) or "-"]
                          for f in findings],
                         ["package", "version", "advisory", "severity", "fixed in", "model versions", "releases"])
                   if findings else f"no known vulnerability in the {len(locked)} locked packages")
        if blocking:
            click.echo(f"\n{len(blocking)} finding(s) at or above {threshold}: promotion is refused unless waived")
    sys.exit(1 if blocking else 0)


@deps.command("waive")
@click.argument("advisory")
@click.option("--package", required=True, help="The package the advisory is about.")
@click.option("--release", "release_id", type=click.IntRange(1, 2**63 - 1), help="Only for this release.")
@ACTOR_OPTION
@click.option("--reason", required=True, help="Why the risk is accepted (recorded in the audit trail).")
@REG_CATALOG_OPTION
@HOME_OPTION
def deps_waive(advisory: str, package: str, release_id: int | None, actor: str | None, reason: str,
               catalog: str | None, home: str | None) -> None:
    """Accept a known vulnerability for promotion (an owner, when the mesh declares teams)."""
    from depmesh.governance.waivers import waive

    actor = acting(actor)
    _, teams, registry = governed_registry(home, catalog, read_only=True)
    if teams is not None:
        registry_call(lambda: teams.require_member(actor, "owner", "waive a vulnerability"))
    registry_call(lambda: waive(registry, advisory=advisory, package=package, release_id=release_id, actor=actor,
                                reason=reason))
    click.echo(f"{advisory} in {package} waived{f' for release {release_id}' if release_id else ''} by {actor}")


@deps.command("container")
@click.argument("release_id", type=click.IntRange(1, 2**63 - 1), required=False, metavar="[RELEASE]")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="A new folder for the context.")
@REG_CATALOG_OPTION
@HOME_OPTION
def deps_container(release_id: int | None, output: str, catalog: str | None, home: str | None) -> None:
    """Write a container build context for a release (default: Production's): Dockerfile pinned to the lock,
    the code, the artifacts and their manifest, an entry point that verifies them and serves the release
    online (depmesh serve --release)."""
    from depmesh.deps.container import write_context
    from depmesh.deps.needs import default_lock

    mesh, _, registry = governed_registry(home, catalog, read_only=True)
    release = _release_or_production(registry, release_id)
    versions = _versions(registry, release)
    schemas = _request_schemas(mesh, registry, release, versions)
    try:
        dockerfile = write_context(Path(output), default_lock().parent, mesh.name, release, versions,
                                   registry.artifacts, schemas)
    except (FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{dockerfile}\nbuild: docker build -t {mesh.name}-release-{release['id']} {output}")


def _request_schemas(mesh, registry, release, versions) -> dict:
    """Per member, what a request must carry (with the catalog's contract bounds, which the image lacks), from
    its verified artifact: what the container's server checks."""
    from depmesh.online.served import Loader

    loader, schemas = Loader(mesh), {}
    for node, version in sorted(release["members"].items()):
        digest = versions[node]["artifact_hash"]
        try:
            schemas[node] = loader.model(node, version, digest,
                                         lambda v=version, d=digest: registry.artifacts.get(d, v)).schema.to_json()
        except Exception as exc:  # noqa: BLE001 - whatever fails, nothing is written
            raise click.ClickException(f"{node}@{version}: the stored artifact does not match its recorded hash or "
                                       f"cannot be loaded; nothing to ship ({type(exc).__name__}: {exc})") from None
    return schemas


@deps.command("upgrade-diff")
@click.argument("overrides", nargs=-1, required=True, metavar="PKG==VERSION...")
@REG_CATALOG_OPTION
@HOME_OPTION
@click.option("--tolerance", type=click.FloatRange(0), help="Largest prediction change allowed (default: the "
                                                            "catalog's dependencies.upgrade.tolerance, else 1e-9).")
@click.option("--model", "models", multiple=True, help="Only this Production model (repeatable; default: all).")
@click.option("--keep", is_flag=True, help="Keep the work folder (both environments' predictions).")
@FORMAT_OPTION
def deps_upgrade_diff(overrides: tuple[str, ...], catalog: str | None, home: str | None, tolerance: float | None,
                      models: tuple[str, ...], keep: bool, fmt: str) -> None:
    """Build a second environment from the lock with these versions (uv, an isolated folder); there load every
    Production model's artifact and retrain it; score the fixed evaluation window in both environments and
    report per model the largest and mean prediction difference, the share of rows beyond the tolerance, the
    metric change, and whether retraining gives the same version. Exit 1 beyond the tolerance."""
    from depmesh.deps.needs import default_lock
    from depmesh.deps.upgrade import (
        DEFAULT_TOLERANCE,
        UpgradeError,
        parse_overrides,
        upgrade_diff,
    )

    mesh, _, registry = governed_registry(home, catalog, read_only=True)
    limit = tolerance if tolerance is not None else (
        mesh.dependencies.upgrade_tolerance if mesh.dependencies else DEFAULT_TOLERANCE)
    try:
        pins = parse_overrides(list(overrides), _lock(None))
        report = upgrade_diff(registry, mesh, pins, repo=default_lock().parent, tolerance=limit, keep=keep,
                              models=list(models), progress=lambda line: click.echo(line, err=True))
    except UpgradeError as exc:
        raise click.ClickException(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, default=float))
    else:
        changed = ", ".join(f"{n} {report['libraries_before'].get(n)} -> {v}" for n, v in report["overrides"].items())
        click.echo(f"upgrade: {changed}; tolerance {limit:g}")
        rows = []
        for node, m in report["models"].items():
            if "max_abs_difference" not in m:
                rows.append([node, "-", "-", "-", "-", "ERROR: " + str(m.get("error_after") or m.get("error_before"))[:60]])
                continue
            metric = ", ".join(f"{k} {v:+.3g}" for k, v in list(m["metric_change"].items())[:2]) or "-"
            rows.append([node, f"{m['max_abs_difference']:.3g}", f"{m['mean_abs_difference']:.3g}",
                         f"{m['share_beyond_tolerance']:.1%}", metric,
                         "same version" + (", same bytes" if m["same_bytes"] else ", other bytes")
                         if m["same_version"] else "OTHER VERSION"])
        click.echo(table(rows, ["model", "max |diff|", "mean |diff|", "rows beyond", "metric change", "retrained"]))
        if report["beyond_tolerance"]:
            click.echo(f"\nbeyond the tolerance: {', '.join(report['beyond_tolerance'])}")
    sys.exit(1 if report["beyond_tolerance"] else 0)
