"""Teams, approvals and notifications: a release reaches Production only when
the owners of the changed models and of their consumers approved, never by
the person who asked; every step is audited and announced on the teams'
webhooks, which never block a change."""

from __future__ import annotations

import json
import time

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
