"""`depmesh serve` as a real server on a free loopback port, following a real registry: its answers are the
batch scores' numbers; every bad input gets its 4xx; a tampered artifact in a new release is refused while the
old set keeps serving; 20 promotions and rollbacks under steady traffic drop no request; a canary key lands on
the same arm online and in batch, and shadow answers with Production; /metrics parses."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from depmesh_tests.conftest import approve_release, copy_of, materialize_mesh
from depmesh_tests.online_server import Server

ARR = "models/arr_delay"
LATE = "models/late_arrival"


class Mesh:
    """The golden instance with release 1 Production and a candidate release 2 (dep_delay retrained with one
    more boosting iteration, and the models trained against it) in Staging."""

    def __init__(self, home: Path, mesh, instance, first: int, second: int):
        self.home, self.mesh, self.instance, self.first, self.second = home, mesh, instance, first, second

    def registry(self):
        from depmesh.artifacts import ArtifactStore
        from depmesh.assets.io import artifacts_dir
        from depmesh.governance import open_governed
        from depmesh.registry.store import default_url

        return open_governed(default_url(self.home), self.mesh, ArtifactStore(artifacts_dir(self.home)))

    def members(self, release: int) -> dict[str, str]:
        registry = self.registry()
        try:
            return registry.release(release)["members"]
        finally:
            registry.dispose()

    def production(self) -> int | None:
        registry = self.registry()
        try:
            return registry.state()["production_release_id"]
        finally:
            registry.dispose()

    def promote(self, release: int) -> None:
        approve_release(self.home, release)
        registry = self.registry()
        try:
            registry.promote(release, actor="eli", reason="serve test")
        finally:
            registry.dispose()

    def rollback(self) -> None:
        registry = self.registry()
        try:
            registry.rollback(actor="jun", reason="serve test")
        finally:
            registry.dispose()


@pytest.fixture(scope="module")
def mesh(golden, demo_mesh, tmp_path_factory):
    from depmesh_tests.test_rollout import train_candidate

    home = tmp_path_factory.mktemp("serve") / "home"
    with copy_of(golden, home) as instance:
        served = Mesh(home, demo_mesh, instance, golden.release_id, 0)
        served.promote(golden.release_id)
        served.second = train_candidate(demo_mesh, instance, {"models/dep_delay": {"max_iter": 151}})
        yield served


@pytest.fixture(scope="module")
def server(mesh, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    server = Server("--home", str(mesh.home), "--poll", "0.1", env={"DAGSTER_HOME": str(mesh.home)}, log=log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def stored(instance, name: str):
    from depmesh.assets.io import MeshStore, storage_dir

    return MeshStore(storage_dir(instance), instance=instance).load(name.split("/"), instance)


def scoring_rows(mesh: Mesh, scores: str, n: int):
    """``n`` rows of the stored scores table and the raw feature records the server needs for them."""
    from depmesh.examples.flights.transforms import model_frame

    table = stored(mesh.instance, scores).head(n)
    inputs = {name: stored(mesh.instance, name) for name in
              ("features/flight_weather", "features/aircraft", "features/route_stats")}
    frame = model_frame(inputs).set_index("flight_id").loc[table["flight_id"]].reset_index()
    return table, frame


def records_for(frame, columns: list[str]) -> list[dict]:
    """JSON records of ``columns`` (a missing value as null)."""
    import pandas as pd

    return [{k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)) for k, v in row.items()}
            for row in frame[columns].to_dict("records")]


def features_of(server: Server, node: str) -> list[str]:
    status, body = server.client().get(f"/v1/models/{node}")
    assert status == 200, body
    return [f["name"] for f in body["features"]]


def test_answers_are_the_batch_scores_for_the_same_rows_and_versions(mesh, server):
    client = server.client()
    members = mesh.members(mesh.first)
    status, release = client.get("/v1/release")
    assert status == 200 and release["release"] == mesh.first
    assert {n: m["version"] for n, m in release["models"].items()} == members
    for scores, node in (("scores/arr_delay", ARR), ("scores/late_arrival", LATE)):
        table, frame = scoring_rows(mesh, scores, 300)
        assert set(table["model_version"]) == {members[node]}  # the golden scores were made by release 1's versions
        records = records_for(frame, [*features_of(server, node), "flight_id"])
        status, body = client.predict(node, records)
        assert status == 200, body
        assert body["version"] == members[node] and body["release"] == mesh.first
        assert body["model_versions"] == [members[node]] * len(records)
        # computed inside the request from the release's own upstream versions
        assert body["upstream"] == {u: members[u] for u in body["upstream"]} and "models/dep_delay" in body["upstream"]
        assert body["predictions"] == table["prediction"].tolist()  # bit for bit: JSON carries every float exactly
        if node == LATE:
            assert body["probabilities"] == table["probability"].tolist()
    # columns form, and a model named by its last part
    cols = {k: [r[k] for r in records[:3]] for k in records[0]}
    status, by_columns = client.request("POST", "/v1/models/late_arrival:predict", {"columns": cols})
    assert status == 200 and by_columns["predictions"] == body["predictions"][:3]


BAD = {  # case -> (change to one good record or a raw body, HTTP status, the field it names or None)
    "missing column": (lambda r: {k: v for k, v in r.items() if k != "temp"}, 422, "temp"),
    "extra column": (lambda r: {**r, "surprise": 1}, 422, "surprise"),
    "wrong type": (lambda r: {**r, "distance": "far"}, 422, "distance"),
    "boolean for a number": (lambda r: {**r, "distance": True}, 422, "distance"),
    "unseen category": (lambda r: {**r, "carrier": "ZZ"}, 422, "carrier"),
    "outside the contract": (lambda r: {**r, "hour": 30}, 422, "hour"),
    "fraction for an integer": (lambda r: {**r, "hour": 5.5}, 422, "hour"),
    "outside the allowed values": (lambda r: {**r, "origin": "JFK "}, 422, "origin"),
    "NaN": (b'{"records": [{"temp": NaN}]}', 422, "temp"),
    "Infinity": (b'{"records": [{"temp": -Infinity}]}', 422, "temp"),
    "a key that is a list": (lambda r: {**r, "flight_id": [1]}, 422, "flight_id"),
    "not JSON": (b'{"records": [', 400, None),
    "not a table": (b'{"rows": []}', 400, None),
    "no rows": (b'{"records": []}', 400, None),
    "ragged columns": (b'{"columns": {"a": [1, 2], "b": [1]}}', 400, None),
    "deeply nested": (b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, None),
    "too many rows": (lambda r: None, 413, None),
    "too large a body": (b'{"records": [{"x": "' + b"a" * 1_100_000 + b'"}]}', 413, None),
}


def test_every_bad_input_gets_its_4xx_naming_the_fields(mesh, server):
    from prometheus_client.parser import text_string_to_metric_families

    client = server.client()
    _, frame = scoring_rows(mesh, "scores/arr_delay", 1)
    good = records_for(frame, [*features_of(server, ARR), "flight_id"])[0]
    answers = {}
    for case, (change, status, field) in BAD.items():
        if case == "too many rows":
            code, body = client.predict(ARR, [good] * 1001)
        elif isinstance(change, bytes):
            code, body = client.request("POST", f"/v1/models/{ARR}:predict", raw=change)
        else:
            code, body = client.predict(ARR, [good, change(good)])
        answers[case] = (code, body)
        assert code == status, (case, body)
        assert body["error"] and body["problems"] and body["model"] == ARR, (case, body)
        if field is not None:
            assert field in body["fields"], (case, body)
            assert any(field in p for p in body["problems"]), (case, body)
        if status == 422 and case not in ("NaN", "Infinity"):
            assert all("row 1" in p for p in body["problems"] if p.startswith("column")), (case, body)
    assert "unseen category" in " ".join(answers["unseen category"][1]["problems"])
    code, body = client.request("POST", f"/v1/models/{ARR}:predict", raw=b'{"records": []}',
                                headers={"Content-Type": "text/csv"})
    assert code == 415 and "application/json" in body["problems"][0]
    code, body = client.predict("models/nope", [good])
    assert code == 404 and ARR in body["problems"][0]
    code, body = client.predict(ARR, [good])  # the server still answers
    assert code == 200
    status, text = client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    refused = {s.labels["reason"]: s.value for s in families["depmesh_serve_refusals"].samples
               if s.name.endswith("_total")}
    assert refused["invalid_input"] >= 11 and refused["malformed_json"] >= 2 and refused["body_too_large"] >= 1
    assert refused["too_many_rows"] >= 1 and refused["unknown_model"] >= 1
    by_status = {(s.labels["model"], s.labels["status"]): s.value for s in families["depmesh_serve_requests"].samples
                 if s.name.endswith("_total")}
    assert by_status[(ARR, "422")] >= 11 and by_status[(ARR, "200")] >= 1 and not any(
        code == "500" for _, code in by_status)
    latency = [s for s in families["depmesh_serve_request_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels["model"] == ARR and s.value >= 1 for s in latency)


def test_a_tampered_artifact_in_a_new_release_is_refused_and_the_old_set_keeps_serving(mesh, server):
    from depmesh.assets.io import artifacts_dir

    client = server.client()
    assert mesh.production() == mesh.first
    old = mesh.members(mesh.first)
    new = mesh.members(mesh.second)
    registry = mesh.registry()
    digest = registry.version("models/dep_delay", new["models/dep_delay"])["artifact_hash"]
    registry.dispose()
    planted = Path(artifacts_dir(mesh.home)) / digest[:2] / f"{digest}.model"
    intact = planted.read_bytes()
    os.kill(server.proc.pid, signal.SIGSTOP)  # the server looks only once the bytes are changed
    try:
        mesh.promote(mesh.second)  # verified by the registry here, then changed on disk before the server loads it
        payload = bytearray(intact)
        payload[len(payload) // 2] ^= 0xFF
        planted.write_bytes(bytes(payload))
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            _, release = client.get("/v1/release")
            if release["last_refusal"]:
                break
            time.sleep(0.1)
        assert release["last_refusal"] and "models/dep_delay" in release["last_refusal"]["reason"]
        assert release["release"] == mesh.first  # the old set keeps serving
        _, frame = scoring_rows(mesh, "scores/arr_delay", 5)
        status, body = client.predict(ARR, records_for(frame, features_of(server, ARR)))
        assert status == 200 and body["version"] == old[ARR] and body["release"] == mesh.first
        assert client.get("/readyz")[0] == 200
        _, text = client.get("/metrics")
        assert "depmesh_serve_swap_refusals_total 1.0" in text
    finally:
        planted.write_bytes(intact)
        mesh.rollback()  # release 1 again: the server, which never served release 2, stays as it is


def test_twenty_promotions_and_rollbacks_under_steady_traffic_drop_no_request(mesh, server):
    """Two clients send single-row requests without pause while the registry flips between the two releases
    20 times; every request is answered, and by the release that was Production then or the one before it."""
    client = server.client()
    releases = {r: mesh.members(r) for r in (mesh.first, mesh.second)}
    _, frame = scoring_rows(mesh, "scores/arr_delay", 20)
    records = records_for(frame, features_of(server, ARR))
    timeline = [(time.monotonic(), mesh.production())]  # (when the registry changed, the release it made Production)
    answers, failures, stop = [], [], threading.Event()

    def traffic(seed: int) -> None:
        own = server.client(reconnect=False)
        i = seed
        while not stop.is_set():
            i += 1
            try:
                status, body = own.predict(ARR, [records[i % len(records)]])
            except Exception as exc:  # noqa: BLE001 - a dropped request is what this test counts
                failures.append(repr(exc))
                own = server.client(reconnect=False)
                continue
            received = time.monotonic()
            if status != 200:
                failures.append((status, body))
            else:
                answers.append((received, body["release"], body["version"]))

    threads = [threading.Thread(target=traffic, args=(s,)) for s in (0, 7)]
    for t in threads:
        t.start()
    try:
        for flip in range(20):
            if mesh.production() == mesh.first:
                mesh.promote(mesh.second)
            else:
                mesh.rollback()
            now = mesh.production()
            timeline.append((time.monotonic(), now))
            deadline = time.monotonic() + 60
            while client.get("/v1/release")[1]["release"] != now and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # traffic on the new set before the next flip
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == []
    assert len(answers) > 200
    for received, release, version in answers:
        assert version == releases[release][ARR]
        # Production when it was answered, or the one before it (a swap lands within a poll)
        index = max(i for i, (at, _) in enumerate(timeline) if at <= received)
        allowed = {timeline[index][1]} | ({timeline[index - 1][1]} if index else set())
        assert release in allowed, (received, release, timeline)
    served = {release for _, release, _ in answers}
    assert served == {mesh.first, mesh.second}
    _, text = client.get("/metrics")
    swaps = next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("depmesh_serve_swaps_total"))
    assert swaps >= 21  # the first load, then each of the 20 changes
    if mesh.production() != mesh.first:
        mesh.rollback()


def test_a_canary_key_lands_on_the_same_arm_online_and_in_batch_and_shadow_answers_with_production(mesh, server):
    from dagster import AssetKey

    from depmesh.rollout.arms import step_figures
    from depmesh.rollout.serving import start, stop
    from depmesh.teams import load_teams

    client = server.client()
    assert mesh.production() == mesh.first
    teams = load_teams(mesh.mesh)
    first, second = mesh.members(mesh.first), mesh.members(mesh.second)
    registry = mesh.registry()
    try:
        shadow = start(registry, mesh.mesh, teams, mesh.second, mode="shadow", actor="gus", reason="online shadow")
        wait_for_rollout(client, shadow["id"])
        table, frame = scoring_rows(mesh, "scores/arr_delay", 400)
        records = records_for(frame, [*features_of(server, ARR), "flight_id"])
        status, body = client.predict(ARR, records)
        assert status == 200 and set(body["model_versions"]) == {first[ARR]}  # shadow answers with Production
        assert body["rollout"]["mode"] == "shadow"
        rows = wait_for_figures(registry, shadow["id"])
        assert rows[0]["node"] == "online" and rows[0]["figures"]["source"] == "online"
        assert rows[0]["figures"]["candidate"]["scored"] == len(records)  # scored, not returned
        stop(registry, actor="gus", reason="canary next")

        approve_release(mesh.home, mesh.second)
        canary = start(registry, mesh.mesh, teams, mesh.second, mode="canary", actor="gus", reason="online canary")
        wait_for_rollout(client, canary["id"])
        status, body = client.predict(ARR, records)
        assert status == 200 and body["rollout"] == {"id": canary["id"], "mode": "canary", "percent": 5.0,
                                                     "key": "flight_id", "keyed": True}
        online = dict(zip(frame["flight_id"].tolist(), body["model_versions"]))
        assert set(online.values()) == {first[ARR], second[ARR]}  # some keys on each arm
        result = materialize_mesh(mesh.mesh, mesh.instance, selection=[AssetKey.from_user_string("scores/arr_delay")])
        assert result.success
        batch = stored(mesh.instance, "scores/arr_delay").set_index("flight_id")["model_version"]
        assert {k: batch[k] for k in online} == online  # every key on the same arm online and in batch
        rows = [r for r in wait_for_figures(registry, canary["id"]) if r["node"] == "online"]
        figures = rows[0]["figures"]
        assert figures["candidate"]["rows"] == sum(v == second[ARR] for v in online.values())
        assert figures["production"]["rows"] + figures["candidate"]["rows"] == len(records)
        from depmesh.rollout.canary import summarize

        summary = summarize(step_figures(registry, canary["id"], 0))[ARR]
        assert summary["candidate"]["rows"] >= figures["candidate"]["rows"]  # the judge counts the online rows
        stop(registry, actor="gus", reason="done")
    finally:
        registry.dispose()


def wait_for_rollout(client, rollout_id: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rollout = client.get("/v1/release")[1]["rollout"]
        if rollout is not None and rollout["id"] == rollout_id:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the server never served rollout {rollout_id}")


def wait_for_figures(registry, rollout_id: int, timeout: float = 30) -> list[dict]:
    from depmesh.rollout.arms import step_figures

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [r for r in step_figures(registry, rollout_id) if r["node"] == "online"]
        if rows:
            return rows
        time.sleep(0.2)
    raise TimeoutError(f"no online figures for rollout {rollout_id}")


def test_serving_says_who_can_reach_it_and_a_token_guards_every_route_but_the_probes(mesh, tmp_path):
    server = Server("--home", str(mesh.home), env={"DAGSTER_HOME": str(mesh.home), "DEPMESH_SERVE_TOKEN": "s3cret"})
    try:
        assert "Authorization: Bearer" in server.banner[1]
        server.wait_ready()
        anonymous = server.client()
        assert anonymous.get("/healthz")[0] == 200 and anonymous.get("/readyz")[0] == 200
        for path in ("/v1/release", f"/v1/models/{ARR}", "/metrics"):
            status, body = anonymous.get(path)
            assert status == 401 and body["error"] == "unauthorized", path
        assert anonymous.get("/v1/release", headers={"Authorization": "Bearer s3cre"})[0] == 401
        assert server.client(token="s3cret").get("/v1/release")[0] == 200
    finally:
        server.stop()
    open_server = Server("--home", str(mesh.home), env={"DAGSTER_HOME": str(mesh.home), "DEPMESH_SERVE_TOKEN": ""})
    try:
        assert open_server.host == "127.0.0.1" and "loopback" in open_server.banner[1]
    finally:
        open_server.stop()


def test_a_bad_serve_command_is_named(mesh, tmp_path):
    from click.testing import CliRunner

    from depmesh.cli import main

    out = CliRunner().invoke(main, ["serve", "--release", str(tmp_path), "--home", str(mesh.home)])
    assert out.exit_code == 2 and "takes no --catalog or --home" in out.output
    out = CliRunner().invoke(main, ["serve", "--home", str(tmp_path / "nothing")])
    assert out.exit_code == 2 and "holds no Dagster instance" in out.output
    out = CliRunner().invoke(main, ["serve", "--home", str(mesh.home), "--poll", "5"])
    assert out.exit_code == 2 and "--poll" in out.output
