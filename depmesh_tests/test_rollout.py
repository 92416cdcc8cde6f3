"""Teams, approvals and notifications: a release reaches Production only when
the owners of the changed models and of their consumers approved, never by
the person who asked; every step is audited and announced on the teams'
webhooks, which never block a change."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from depmesh.cli import main
from depmesh.teams import TeamsError, parse_teams
from depmesh_tests.conftest import copy_of

TEAMS = """\
mesh: flights
teams:
  ingestion: {members: {ana: [owner, on-call]}}
  features: {members: {chen: [owner]}}
  delay-models: {members: {eli: [owner, on-call], gus: [member]}}
  customer-ops: {members: {hana: [owner]}}
  airport-operations: {members: {ivo: [owner, on-call]}}
  network-planning: {members: {kai: [owner]}}
"""


@pytest.mark.parametrize("change,words", [
    (("eli: [owner, on-call]", "eli: [owner, boss]"), "field members.eli: unknown role 'boss' (known: owner, on-call, member)"),
    (("hana: [owner]", "hana: [member]"), "node team:customer-ops: field members: a team needs at least one owner"),
    (("  network-planning: {members: {kai: [owner]}}\n", ""), "team 'team:network-planning' owns models/route_segment "
                                                             "in the catalog but is not declared here"),
    (("{members: {ana: [owner, on-call]}}", "{members: {ana: [owner]}, webhook: 'file:///etc/passwd'}"),
     "a webhook is an http(s) URL or ${VAR}"),
    (("{members: {chen: [owner]}}", "{members: {chen: [owner]}, pager: 555}"), "unknown key 'pager'"),
    (("{members: {kai: [owner]}}", "{members: {'--actor': [owner]}}"), "a member's name is letters, digits"),
    (("mesh: flights", "mesh: clinic"), "this file is for mesh 'clinic'"),
    (("  features: {members: {chen: [owner]}}\n", "  features: {members: {chen: [owner]}}\n  features: {members: {x: [owner]}}\n"),
     "duplicate key 'features'"),
])
def test_a_bad_teams_file_is_named_with_file_line_and_field(demo_mesh, tmp_path, change, words):
    with pytest.raises(TeamsError) as info:
        parse_teams(TEAMS.replace(*change), tmp_path / "teams.yaml", demo_mesh)
    problems = [str(p) for p in info.value.problems]
    assert any(words in p and p.startswith("teams.yaml") for p in problems), problems


def test_an_expanding_teams_file_is_refused_before_it_expands(demo_mesh, tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8)) + "teams: {}\n"
    with pytest.raises(TeamsError, match="YAML aliases expand"):
        parse_teams(bomb, tmp_path / "teams.yaml", demo_mesh)


def test_the_demo_teams_cover_every_owner(demo_mesh):
    from depmesh.teams import load_teams

    teams = load_teams(demo_mesh)
    assert {n.owner for n in demo_mesh.nodes} <= set(teams.teams)
    assert teams.team("delay-models").people("owner") == ["eli", "fay"]
    out = CliRunner().invoke(main, ["teams", "list", "--format", "json"])
    listed = {t["team"]: t for t in json.loads(out.output)}
    assert listed["team:network-planning"]["owns"] == ["models/route_segment"]
    assert "http" not in out.output  # a webhook's URL (it carries tokens) is never shown


def cli(runner, *args: str, code: int = 0) -> str:
    out = runner.invoke(main, list(args))
    assert out.exit_code == code, out.output
    return out.output


def test_a_release_needs_every_affected_owner_and_not_the_requester(golden, tmp_path, webhooks):
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    release = str(golden.release_id)
    with copy_of(golden, tmp_path / "home"):
        refused = cli(runner, "release", "promote", release, *home, "--actor", "eli", "--reason", "go", code=1)
        assert f"release {release} needs approval before Production" in refused
        cli(runner, "release", "request", release, *home, "--actor", "mallory", "--reason", "go", code=1)
        asked = cli(runner, "release", "request", release, *home, "--actor", "gus", "--reason", "weekly release")
        # every model is new: their owners, and the owners of everything downstream (scores, the ops report)
        for team in ("team:delay-models", "team:customer-ops", "team:network-planning", "team:airport-operations"):
            assert team in asked
        assert "team:ingestion" not in asked and "team:features" not in asked
        again = cli(runner, "release", "request", release, *home, "--actor", "eli", "--reason", "x", code=1)
        assert "already has open promotion request 1" in again
        [request] = json.loads(cli(runner, "release", "requests", *home, "--format", "json"))
        assert request["requested_by"] == "gus" and request["status"] == "pending"
        airport = next(r for r in request["required"] if r["team"] == "team:airport-operations")
        assert airport["nodes"] == ["consumers/ops_report"] and airport["why"] == ["owns a downstream consumer"]
        # each team that must approve heard of the request, with the nodes it is asked about
        assert [p["event"] for p in webhooks.to("delay-models")] == ["promotion_requested"]
        assert webhooks.to("delay-models")[0]["nodes"] == ["models/arr_delay", "models/dep_delay", "scores/arr_delay",
                                                          "scores/dep_delay"]
        assert webhooks.to("ingestion") == []
        # refused: the requester, a member who is no owner, an owner of a team that is not asked, an unknown actor
        assert "asked for promotion request 1 and may not approve it" in cli(
            runner, "release", "approve", "1", *home, "--actor", "gus", "--reason", "mine", code=1)
        assert "is not an owner of a team that must approve request 1" in cli(
            runner, "release", "approve", "1", *home, "--actor", "ana", "--reason", "sure", code=1)
        assert "is not a member of any team" in cli(
            runner, "release", "approve", "1", *home, "--actor", "mallory", "--reason", "sure", code=1)
        partly = cli(runner, "release", "approve", "1", *home, "--actor", "eli", "--reason", "metrics hold")
        assert "still waiting for" in partly and "team:delay-models" not in partly.split("still waiting for")[1]
        assert "already approved request 1" in cli(
            runner, "release", "approve", "1", *home, "--actor", "fay", "--reason", "me too", code=1)
        cli(runner, "release", "approve", "1", *home, "--actor", "hana", "--reason", "ok for passengers")
        cli(runner, "release", "approve", "1", *home, "--actor", "kai", "--reason", "segments fine")
        assert json.loads(cli(runner, "release", "show", release, *home, "--format", "json"))["status"] == "Staging"
        last = cli(runner, "release", "approve", "1", *home, "--actor", "ivo", "--reason", "report checked")
        assert f"release {release} is Production" in last
        shown = json.loads(cli(runner, "release", "show", release, *home, "--format", "json"))
        assert shown["status"] == "Production"
        [request] = json.loads(cli(runner, "release", "requests", *home, "--format", "json"))
        assert request["status"] == "promoted" and [d["actor"] for d in request["decisions"]] == [
            "eli", "hana", "kai", "ivo"]
        audit = json.loads(cli(runner, "release", "audit", release, *home, "--format", "json"))
        assert [(a["action"], a["actor"]) for a in audit] == [
            ("promotion_requested", "gus"), ("approved", "eli"), ("approved", "hana"), ("approved", "kai"),
            ("approved", "ivo")]
        history = cli(runner, "registry", "history", "models/dep_delay", *home)
        assert "ivo" in history and "request 1 approved" in history
        events = [p["event"] for p in webhooks.to("airport-operations")]
        assert events[0] == "promotion_requested" and events.count("approved") == 4


def test_a_rejected_request_closes_and_only_on_call_members_roll_back(golden, tmp_path, webhooks):
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    release = str(golden.release_id)
    with copy_of(golden, tmp_path / "home"):
        cli(runner, "release", "request", release, *home, "--actor", "gus", "--reason", "weekly")
        cli(runner, "release", "approve", "1", *home, "--actor", "eli", "--reason", "ok")
        rejected = cli(runner, "release", "reject", "1", *home, "--actor", "hana", "--reason", "late arrivals regressed")
        assert "rejected by hana" in rejected
        assert "is rejected, not pending" in cli(runner, "release", "approve", "1", *home, "--actor", "kai",
                                                 "--reason", "x", code=1)
        assert "needs approval" in cli(runner, "release", "promote", release, *home, "--actor", "eli",
                                       "--reason", "anyway", code=1)
        assert [p["event"] for p in webhooks.to("network-planning")] == ["promotion_requested", "approved", "rejected"]
        # a rollback needs no approval, but an on-call member: kai is owner only
        assert "'kai' is not on-call of any team" in cli(runner, "release", "rollback", *home, "--actor", "kai",
                                                         "--reason", "x", code=1)
        assert "nothing to roll back" in cli(runner, "release", "rollback", *home, "--actor", "ivo",
                                                    "--reason", "x", code=1)  # allowed; nothing to roll back to


def test_the_actor_is_bound_to_the_identity_the_deployment_names(golden, tmp_path, monkeypatch):
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    with copy_of(golden, tmp_path / "home"):
        monkeypatch.setenv("DEPMESH_IDENTITY", "env:CI_ACTOR")
        monkeypatch.setenv("CI_ACTOR", "gus")
        spoofed = cli(runner, "release", "request", str(golden.release_id), *home, "--actor", "eli", "--reason", "x",
                      code=2)
        assert "--actor 'eli' is not $CI_ACTOR ('gus')" in spoofed
        asked = cli(runner, "release", "request", str(golden.release_id), *home, "--reason", "weekly")
        assert "by gus" in asked
        monkeypatch.setenv("CI_ACTOR", "eli")
        cli(runner, "release", "approve", "1", *home, "--reason", "ok")  # eli, from the CI identity
        monkeypatch.delenv("CI_ACTOR")
        assert "which is not set" in cli(runner, "release", "approve", "1", *home, "--reason", "ok", code=2)
        monkeypatch.setenv("DEPMESH_IDENTITY", "ldap")
        assert "expected 'os' or 'env:VARIABLE'" in cli(runner, "release", "approve", "1", *home, "--reason", "ok",
                                                        code=2)


def test_the_os_identity_cannot_be_borrowed_through_login_variables(monkeypatch):
    """DEPMESH_IDENTITY=os binds the actor to the process's user in the password database (effective uid);
    LOGNAME, USER and USERNAME name nobody (getpass.getuser() read them first: `LOGNAME=eli` approved as eli)."""
    import pwd

    from depmesh.teams import ActorError, resolve_actor

    me = pwd.getpwuid(os.geteuid()).pw_name
    monkeypatch.setenv("DEPMESH_IDENTITY", "os")
    for variable in ("LOGNAME", "USER", "USERNAME", "LNAME"):
        monkeypatch.setenv(variable, "eli")
    assert resolve_actor(None) == me != "eli"
    with pytest.raises(ActorError, match="is not the operating-system user"):
        resolve_actor("eli")


def test_a_failing_webhook_never_blocks_a_change_and_is_retried_a_bounded_number_of_times(golden, tmp_path,
                                                                                       webhooks, monkeypatch):
    from depmesh.notify import MAX_ATTEMPTS

    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    with copy_of(golden, tmp_path / "home"):
        monkeypatch.setenv("DEPMESH_WEBHOOK_DELAY_MODELS", "http://127.0.0.1:9/closed")  # nothing listens there
        webhooks.fail_next = 2  # the receiver answers 500 twice, then recovers (a delivery tries 3 times)
        started = time.perf_counter()
        cli(runner, "release", "request", str(golden.release_id), *home, "--actor", "gus", "--reason", "weekly")
        assert time.perf_counter() - started < 60  # bounded: a few short tries, never a hang
        [request] = json.loads(cli(runner, "release", "requests", *home, "--format", "json"))
        assert request["status"] == "pending"  # the change happened whatever the webhooks did
        queued = {n["team"]: n for n in json.loads(cli(runner, "notifications", "list", *home, "--format", "json"))}
        assert queued["team:delay-models"]["status"] == "pending" and queued["team:delay-models"]["attempts"] == 3
        assert "<webhook>" in queued["team:delay-models"]["last_error"] or "refused" in queued[
            "team:delay-models"]["last_error"]
        assert "127.0.0.1:9" not in json.dumps(queued)  # the URL (a secret) is not stored with the error
        # the receiver's 500s were retried within the delivery: the others arrived
        assert {p["team"] for p in webhooks.received} == {"team:customer-ops", "team:network-planning",
                                                          "team:airport-operations"}
        for _ in range(3):
            runner.invoke(main, ["notifications", "deliver", *home])
        final = {n["team"]: n for n in json.loads(cli(runner, "notifications", "list", *home, "--format", "json"))}
        assert final["team:delay-models"]["status"] == "failed" and final["team:delay-models"]["attempts"] == MAX_ATTEMPTS
        audit = json.loads(cli(runner, "release", "audit", *home, "--format", "json"))
        assert [a["details"]["team"] for a in audit if a["action"] == "notification_failed"] == ["team:delay-models"]
        assert cli(runner, "notifications", "deliver", *home) .startswith("sent 0, to retry 0, given up 0")


@pytest.mark.parametrize("url, secrets", [
    # userinfo: urllib quotes it in "nonnumeric port: 'TOKEN@host'"
    ("http://bot:S3cretUserinfoToken@localhost/hooks/x", ["S3cretUserinfoToken"]),
    ("http://127.0.0.1:9/services/T0001/B0002/PathToken42?token=QueryToken42", ["PathToken42", "QueryToken42"]),
])
def test_a_webhook_token_is_never_stored_or_printed(golden, tmp_path, monkeypatch, url, secrets):
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()
    with copy_of(golden, tmp_path / "home"):
        monkeypatch.setenv("DEPMESH_WEBHOOK_DELAY_MODELS", url)
        out = cli(runner, "release", "request", str(golden.release_id), *home, "--actor", "gus", "--reason", "weekly")
        for _ in range(2):
            out += runner.invoke(main, ["notifications", "deliver", *home]).output
        listed = cli(runner, "notifications", "list", *home, "--format", "json")
        stored = listed + cli(runner, "release", "audit", *home, "--format", "json")
        errors = [n["last_error"] for n in json.loads(listed) if n["last_error"]]
        assert errors, listed  # the delivery failed, and says so
        for secret in secrets:
            assert secret not in stored and secret not in out, secret


def test_a_bad_webhook_in_teams_yaml_is_named_without_its_token(tmp_path, demo_mesh):
    from depmesh.teams import TeamsError

    text = ("mesh: flights\nteams:\n  ops:\n    members: {ana: [owner]}\n"
            "    webhook: ftp://bot:Pa55wordToken@hooks.example.com/SecretPath\n")
    (tmp_path / "teams.yaml").write_text(text)
    with pytest.raises(TeamsError) as info:
        parse_teams(text, tmp_path / "teams.yaml", demo_mesh)
    said = str(info.value)
    assert "webhook" in said and "Pa55wordToken" not in said and "SecretPath" not in said


# --- shadow and canary --------------------------------------------------------------

SCORES = ("scores/dep_delay", "scores/arr_delay", "scores/late_arrival")


def train_candidate(mesh, instance, params: dict) -> int:
    """Retrain the models ``params`` names (and those trained against them) with those parameters: a candidate
    release in Staging; returns its id."""
    from dagster import AssetKey

    from depmesh import graph
    from depmesh.keys import PARAMS_TAG
    from depmesh_tests.conftest import materialize_mesh

    chosen = sorted({*params, *graph.downstream(mesh.inputs_map(), list(params))} - {"consumers/ops_report"})
    result = materialize_mesh(mesh, instance, selection=[AssetKey.from_user_string(n) for n in
                                                         [*chosen, "releases/flights"]],
                              tags={PARAMS_TAG: json.dumps(params)})
    assert result.success
    [release] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "releases"]
    assert release.materialization.metadata["new_release"].value
    return release.materialization.metadata["release_id"].value


def score(mesh, instance):
    from dagster import AssetKey

    from depmesh_tests.conftest import materialize_mesh

    result = materialize_mesh(mesh, instance, selection=[AssetKey.from_user_string(n) for n in
                                                         [*SCORES, "reports/flights/rollout"]])
    assert result.success
    return result


def stored(instance, name: str):
    from depmesh.assets.io import MeshStore, storage_dir

    return MeshStore(storage_dir(instance), instance=instance).load(name.split("/"), instance)


def approve_all(runner, home, *catalog: str) -> str:
    """Approve the newest request by an owner of each team still waiting (the last approval starts the canary)."""
    last = ""
    while True:
        request = json.loads(cli(runner, "release", "requests", *home, *catalog, "--format", "json"))[-1]
        if request["status"] != "pending":
            return last
        owner = request["waiting_for"][0]["owners"][0]
        last = cli(runner, "release", "approve", str(request["id"]), *home, *catalog, "--actor", owner, "--reason",
                   "ok")


def test_a_shadow_scores_beside_production_and_a_sound_canary_reaches_every_row(golden, demo_mesh, tmp_path,
                                                                                webhooks, browser, screenshots):
    from depmesh.assets.registry_resource import open_registry
    from depmesh.registry.store import default_url

    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    with copy_of(golden, tmp_path / "home") as instance:
        from depmesh_tests.conftest import approve_release

        approve_release(tmp_path / "home", golden.release_id)
        cli(runner, "release", "promote", str(golden.release_id), *home, "--actor", "eli", "--reason", "first")
        production = open_registry(default_url(tmp_path / "home"), "flights").production()
        # one more boosting iteration: a candidate as good as Production
        candidate = train_candidate(demo_mesh, instance, {"models/dep_delay": {"max_iter": 151}})
        members = open_registry(default_url(tmp_path / "home"), "flights").release(candidate)["members"]

        # shadow: the candidate scores every batch too; Production's predictions are what is stored
        assert "needs an approved promotion request" in cli(
            runner, "rollout", "start", str(candidate), "--canary", *home, "--actor", "gus", "--reason", "x", code=1)
        cli(runner, "rollout", "start", str(candidate), "--shadow", *home, "--actor", "gus", "--reason", "try it")
        result = score(demo_mesh, instance)
        dep = stored(instance, "scores/dep_delay")
        assert set(dep["model_version"]) == {production["models/dep_delay"]}
        checks = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()
                  if e.check_name == "rollout"}
        assert set(checks) == set(SCORES) and all(c.passed for c in checks.values())
        meta = checks["scores/dep_delay"].metadata
        assert 0 <= meta["prediction_shift"].value < 0.05 and 0 <= meta["disagreement_rate"].value < 0.5
        assert meta["error_rate"].value == 0 and meta["latency_ratio"].value > 0
        assert "shadow rollout 1 at 100%" in checks["scores/dep_delay"].description
        [report] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "rollout"]
        assert "**shadow rollout 1** of release" in report.materialization.metadata["rollout"].value
        cli(runner, "rollout", "stop", *home, "--actor", "gus", "--reason", "canary next")

        # canary: approved, then 5% -> 25% -> 50% -> 100% -> promoted by depmesh/canary
        cli(runner, "release", "request", str(candidate), "--canary", *home, "--actor", "gus", "--reason", "canary")
        assert "canary rollout 2 of release" in approve_all(runner, home)
        percents, chosen = [], []
        for _ in range(6):
            score(demo_mesh, instance)
            dep = stored(instance, "scores/dep_delay")
            served = set(dep.loc[dep["model_version"] == members["models/dep_delay"], "flight_id"])
            percents.append(round(100 * len(served) / len(dep)))
            chosen.append(served)
            advanced = cli(runner, "rollout", "advance", *home)
            if "promoted" in advanced:
                break
        assert "hold -> promoted" in advanced
        assert len(percents) == 4 and percents[-1] == 100
        assert 2 <= percents[0] <= 9 and 20 <= percents[1] <= 30 and 45 <= percents[2] <= 55  # a hash of the key
        assert chosen[0] <= chosen[1] <= chosen[2] <= chosen[3]  # a flight once on the candidate stays on it
        registry = open_registry(default_url(tmp_path / "home"), "flights")
        assert registry.production() == members and registry.release(candidate)["status"] == "Production"
        audit = [(a["actor"], a["action"]) for a in json.loads(cli(runner, "release", "audit", str(candidate), *home,
                                                                    "--format", "json"))]
        assert audit[-4:] == [("depmesh/canary", "canary_advanced")] * 3 + [("depmesh/canary", "canary_completed")]
        assert registry.history("models/dep_delay")[-1]["actor"] == "depmesh/canary"
        assert [p["event"] for p in webhooks.to("delay-models")][-4:] == ["canary_advanced"] * 3 + ["promoted"]

        # the A/B evidence: per step, the bootstrap interval of the difference; the page opens in a browser
        evidence = json.loads(cli(runner, "rollout", "report", "2", *home, "--format", "json"))
        ab = evidence["models"]["models/dep_delay"]["ab"]
        assert ab["percent"] == 50 and ab["low"] <= ab["difference"] <= ab["high"]
        assert ab["decision"] in ("better", "worse", "inconclusive") and ab["production_rows"] > 100
        page_file = Path(cli(runner, "rollout", "report", "2", *home, "--format", "html").strip())
        shown = json.loads(cli(runner, "release", "show", str(candidate), *home, "--format", "json"))
        assert shown["rollout_report"] == str(page_file)  # the release's page links its report
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        try:
            page.goto(page_file.as_uri())
            page.locator("#chart0 .main-svg").first.wait_for(timeout=30_000)
            assert page.locator("section.model").count() == 3
            assert page.locator("#chart0 .bars .point").count() == 2 * 4  # two arms at each of the four steps
            assert page.locator("p.ab").first.get_attribute("data-decision") == ab["decision"]
            page.screenshot(path=str(screenshots / "canary_report.png"), full_page=True)
        finally:
            page.close()
        # an on-call member rolls back without approval; the models' teams and their consumers' hear of it
        back = cli(runner, "release", "rollback", *home, "--actor", "jun", "--reason", "late arrivals look off")
        assert f"release {golden.release_id} is Production again" in back
        rollback = [p for p in webhooks.received if p["event"] == "rollback"]
        assert {p["team"] for p in rollback} == {"team:delay-models", "team:customer-ops", "team:network-planning",
                                                 "team:airport-operations"}
        assert all(p["by"] == "jun" and p["to_release"] == golden.release_id for p in rollback)


def test_a_degraded_canary_is_rolled_back_with_the_threshold_and_the_figure(golden, demo_mesh, tmp_path, webhooks):
    """A team whose training gate is loose (50%): the canary's 5% threshold on live rows catches the candidate."""
    import shutil

    from depmesh.assets.registry_resource import open_registry
    from depmesh.catalog import load_catalog
    from depmesh.examples import DEMO_CATALOG
    from depmesh.registry.store import default_url

    folder = tmp_path / "loose"
    folder.mkdir()
    for name in ("teams.yaml", "failure_modes.yaml"):
        shutil.copy(DEMO_CATALOG.parent / name, folder / name)
    text = DEMO_CATALOG.read_text().replace("gates: {max_regression: 0.05, single_p95_ms: 250",
                                            "gates: {max_regression: 0.5, single_p95_ms: 250", 1)
    (folder / "catalog.yaml").write_text(text)
    loose = load_catalog(folder / "catalog.yaml")
    assert loose.node("models/dep_delay").model.gates.max_regression == 0.5
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    catalog = ["--catalog", str(folder / "catalog.yaml")]
    with copy_of(golden, tmp_path / "home") as instance:
        from depmesh_tests.conftest import approve_release

        approve_release(tmp_path / "home", golden.release_id)
        cli(runner, "release", "promote", str(golden.release_id), *home, "--actor", "eli", "--reason", "first")
        production = open_registry(default_url(tmp_path / "home"), "flights").production()
        candidate = train_candidate(loose, instance, {"models/dep_delay": {"loss": "squared_error",
                                                                                     "max_iter": 40}})
        cli(runner, "release", "request", str(candidate), "--canary", *home, *catalog, "--actor", "gus",
            "--reason", "faster training")
        approve_all(runner, home, *catalog)
        score(loose, instance)
        judged = cli(runner, "rollout", "advance", *home, *catalog)
        assert "step 1: break -> rolled_back" in judged
        assert "models/dep_delay: metric regression +" in judged and "(max_metric_regression 5.0%;" in judged
        [rollout] = json.loads(cli(runner, "rollout", "status", *home, "--format", "json"))
        assert rollout["status"] == "rolled_back" and "step 1 of 4 (5%) broke" in rollout["reason"]
        registry = open_registry(default_url(tmp_path / "home"), "flights")
        assert registry.production() == production and registry.release(candidate)["status"] == "Staging"
        request = json.loads(cli(runner, "release", "requests", *home, "--format", "json"))[-1]
        assert request["status"] == "rolled_back"  # promoting it again needs a new request
        assert "needs approval" in cli(runner, "release", "promote", str(candidate), *home, "--actor", "eli",
                                       "--reason", "anyway", code=1)
        audit = json.loads(cli(runner, "release", "audit", str(candidate), *home, "--format", "json"))
        assert (audit[-1]["actor"], audit[-1]["action"]) == ("depmesh/canary", "canary_rolled_back")
        assert "max_metric_regression" in audit[-1]["reason"]
        rollback = [p for p in webhooks.to("delay-models") if p["event"] == "canary_rollback"]
        assert len(rollback) == 1 and "max_metric_regression" in rollback[0]["reason"]
        assert any(p["event"] == "canary_rollback" for p in webhooks.to("airport-operations"))  # a consumer's team
        # rolled back: the next scoring serves no candidate
        after = [e for e in score(loose, instance).get_asset_check_evaluations() if e.check_name == "rollout"]
        assert after and all(e.description == "no rollout is active" for e in after)


@pytest.mark.parametrize("block,words", [
    ("rollout: {key: flight_id, steps: [5, 25, 50]}", "the last step must be 100% (it is 50.0%)"),
    ("rollout: {key: flight_id, steps: [25, 5, 100]}", "steps must grow: 5% after 25.0%"),
    ("rollout: {key: flight_id, steps: [0, 100]}", "expected a percent in (0, 100], got 0"),
    ("rollout: {key: tail, steps: [100]}", "key 'tail' is not a column of scores/s"),
    ("rollout: {key: flight_id, steps: [100], thresholds: {max_error_rate: -1}}", "expected a number >= 0, got -1"),
    ("rollout: {key: flight_id, steps: [100], thresholds: {max_mood: 1}}", "unknown key 'max_mood'"),
    ("rollout: {key: flight_id, steps: [{percent: 100, min_rows: 0}]}", "expected a whole number >= 1, got 0"),
    ("rollout: {key: flight_id, steps: [100], confidence: 1.5}", "expected a fraction in [0.5, 1), got 1.5"),
])
def test_a_bad_rollout_plan_is_named(tmp_path, block, words):
    from depmesh.catalog import CatalogError, parse_catalog

    text = f"""\
mesh: m
{block}
nodes:
  - {{name: raw/a, kind: dataset, owner: team:x, compute: depmesh.examples.flights.sources:load_airlines}}
  - name: scores/s
    kind: scores
    owner: team:x
    inputs: [raw/a]
    compute: depmesh.examples.flights.transforms:score
    contract: {{version: 1.0.0, columns: {{flight_id: {{dtype: int64}}}}}}
"""
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, tmp_path / "m.yaml")
    problems = [str(p) for p in info.value.problems]
    assert any(words in p and "node rollout" in p for p in problems), problems


def test_the_latency_ratio_keeps_its_verdict_under_background_load(golden):
    """The same model beside itself, alone and with two busy processes on the two cores: the ratio stays near 1,
    far inside the 5x threshold, both times (wall-clock time of one call each read 0.5x-6.5x on a loaded run)."""
    import multiprocessing

    from dagster import DagsterInstance

    from depmesh.assets.io import MeshStore, storage_dir
    from depmesh.examples.flights.transforms import model_frame
    from depmesh.rollout.arms import TimedEstimator, latency_ratio

    instance = DagsterInstance.from_config(str(golden.home))  # only read
    try:
        store = MeshStore(storage_dir(instance), instance=instance)
        model = store.load(["models", "arr_delay"], instance)
        inputs = {n: store.load(n.split("/"), instance) for n in ("features/flight_weather", "features/aircraft",
                                                                  "features/route_stats")}
    finally:
        instance.dispose()
    timer = TimedEstimator(model)
    timer.model.predict(model_frame({**inputs, "models/arr_delay": model}).head(3000))
    quiet = latency_ratio(timer.estimator, timer.estimator, timer.batch)
    burners = [multiprocessing.get_context("spawn").Process(target=_burn, daemon=True) for _ in range(2)]
    for b in burners:
        b.start()
    try:
        loaded = [latency_ratio(timer.estimator, timer.estimator, timer.batch) for _ in range(3)]
    finally:
        for b in burners:
            b.terminate()
    assert 0.5 < quiet < 2 and all(0.5 < r < 2 for r in loaded), (quiet, loaded)


def _burn() -> None:
    while True:
        sum(i * i for i in range(10_000))
