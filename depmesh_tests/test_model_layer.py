"""The model layer beyond the flights demo: several classes, a trainer that
reports no baseline, a builder reading a column its input lost, a loader
that ignores --sample."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dagster import instance_for_test

from depmesh.catalog import GateSpec, load_catalog
from depmesh.examples import CLINIC_CATALOG
from depmesh.gates import evaluate as gates
from depmesh.models import TrainedModel
from depmesh_tests.conftest import materialize_mesh


@pytest.fixture(scope="module")
def iris_model():
    """A three-class classifier on scikit-learn's bundled iris data, with a subgroup column."""
    from sklearn.datasets import load_iris
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    data = load_iris(as_frame=True)
    frame = data.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["site"] = np.where(np.arange(len(frame)) % 2 == 0, "north", "south")
    features = [c for c in frame.columns if c not in ("target", "site")]
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=500)).fit(frame[features], frame["target"])
    model = TrainedModel(node="models/species", task="classification", estimator=estimator, features=features,
                         target="target", prediction_column="pred_species", version="v1",
                         metrics={"roc_auc": 0.99}, sample_input=frame[features + ["site"]].head(32))
    return model, (frame[features + ["site"]], frame["target"].to_numpy())


def test_a_three_class_model_gets_one_probability_per_class(iris_model):
    model, (frame, _) = iris_model
    proba = model.predict_proba(frame.head(5))
    assert proba.shape == (5, 3) and np.allclose(proba.sum(axis=1), 1)


def test_every_gate_works_for_a_three_class_model_with_subgroups(iris_model):
    model, evaluation = iris_model
    spec = GateSpec(subgroups=("site",), subgroup_min_rows=20, subgroup_limit=0.9)
    results = {r.name: r for r in gates.evaluate_gates(model, spec, evaluation, None)}
    assert set(results) == set(gates.GATES)
    subgroups = results[gates.SUBGROUPS]
    assert subgroups.passed, subgroups.summary  # before: "multi_class must be in ('ovo', 'ovr')"
    assert {row["group"] for row in subgroups.figures["per_group"]} == {"north", "south"}
    assert all(r.passed for r in results.values()), {n: r.summary for n, r in results.items() if not r.passed}


def test_a_first_version_without_a_trainer_baseline_is_judged_against_depmesh_s(iris_model):
    frame = pd.DataFrame({"x": np.arange(200.0)})
    y = np.arange(200.0)
    good = TrainedModel(node="models/r", task="regression", estimator=None, features=["x"], target="y",
                        prediction_column="p", version="v1", metrics={"mae": 3.0})
    awful = TrainedModel(node="models/r", task="regression", estimator=None, features=["x"], target="y",
                         prediction_column="p", version="v2", metrics={"mae": 1e9})
    spec = GateSpec()
    passed = gates.quality(good, spec, None, (frame, y))
    assert passed.passed and passed.figures["against"] == "naive baseline (depmesh's median)"
    assert passed.figures["reference"] == pytest.approx(50.0)  # MAE of the median of 0..199
    failed = gates.quality(awful, spec, None, (frame, y))
    assert not failed.passed  # before: an MAE of 1e9 passed against "naive baseline inf"
    with pytest.raises(ValueError, match="reported no baseline_mae and left no evaluation window"):
        gates.quality(awful, spec, None, None)


def drop_bmi(inputs, ctx):
    """A feature step that lost a column the model reads (no edge contract lists it)."""
    from depmesh.examples.clinic.builders import patient_features

    return patient_features(inputs, ctx).drop(columns=["bmi"])


def test_a_column_lost_upstream_is_named_with_the_edge_contract_to_extend(tmp_path):
    text = CLINIC_CATALOG.read_text().replace("compute: depmesh.examples.clinic.builders:patient_features",
                                              "compute: depmesh_tests.test_model_layer:drop_bmi")
    (tmp_path / "clinic.yaml").write_text(text)
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize_mesh(load_catalog(tmp_path / "clinic.yaml"), instance)
        [failure] = [e for e in result.get_step_failure_events() if e.step_key == "models__progression"]
        error = failure.step_failure_data.error.cause
        assert error.cls_name == "MissingInputColumn"
        assert ("node models/progression: its builder reads column 'bmi', which features/patients does not have"
                in error.message)
        assert "add 'bmi' to the edge contract (inputs: - {node: features/patients, columns: [..., bmi]})" \
            in error.message


def test_a_loader_that_ignores_the_sample_is_said_to(tmp_path, demo_mesh):
    text = ("mesh: tiny\nnodes:\n"
            "  - {name: raw/a, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source}\n")
    (tmp_path / "tiny.yaml").write_text(text)
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = materialize_mesh(load_catalog(tmp_path / "tiny.yaml"), instance, sample=0.5)
        [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["raw", "a"]]
        assert event.materialization.metadata["depmesh/sample"].value == \
            "the loader ignored the sample 0.5: full data"
        full = materialize_mesh(load_catalog(tmp_path / "tiny.yaml"), instance, sample=1.0)
        [event] = [e for e in full.get_asset_materialization_events() if e.asset_key.path == ["raw", "a"]]
        assert "depmesh/sample" not in event.materialization.metadata


def test_the_demo_loaders_honour_the_sample(golden):
    from dagster import AssetKey, DagsterInstance

    instance = DagsterInstance.from_config(str(golden.home))
    try:
        md = instance.get_latest_materialization_event(AssetKey(["raw", "flights"])).asset_materialization.metadata
        assert "depmesh/sample" not in md
    finally:
        instance.dispose()


def test_a_random_split_keeps_each_row_in_its_part_whatever_the_order():
    from depmesh.catalog import RandomSplit
    from depmesh.models import split_masks

    frame = pd.DataFrame({"id": np.arange(1000)})
    split = RandomSplit(evaluate_share=0.2, score_share=0.1, seed=3, key="id")
    train, evaluate, score = split_masks(frame, split)
    assert abs(evaluate.mean() - 0.2) < 0.05 and abs(score.mean() - 0.1) < 0.05
    assert not (train & evaluate).any() and not (evaluate & score).any() and (train | evaluate | score).all()
    shuffled = frame.sample(frac=1.0, random_state=1)
    _, again, _ = split_masks(shuffled, split)
    assert set(shuffled["id"][again]) == set(frame["id"][evaluate])  # by key, not by position
    _, other_seed, _ = split_masks(frame, RandomSplit(evaluate_share=0.2, seed=4, key="id"))
    assert set(frame["id"][other_seed]) != set(frame["id"][evaluate])


def test_a_column_split_holds_out_groups():
    from depmesh.catalog import ColumnSplit
    from depmesh.models import EmptyTrainingData, split_masks

    frame = pd.DataFrame({"island": ["A", "B", "C", "A", "B", "C"]})
    train, evaluate, score = split_masks(frame, ColumnSplit(column="island", evaluate=("B",), score=("C",)))
    assert list(frame["island"][train]) == ["A", "A"] and list(frame["island"][evaluate]) == ["B", "B"]
    assert list(frame["island"][score]) == ["C", "C"]
    with pytest.raises(EmptyTrainingData, match=r"with island in \['Z'\]"):
        split_masks(frame, ColumnSplit(column="island", evaluate=("Z",)))


@pytest.mark.parametrize("split,message", [
    ("{kind: random, evaluate_share: 1.5}", "expected a share between 0 and 1"),
    ("{kind: random, evaluate_share: 0.6, score_share: 0.5}", "evaluate_share must be above 0 and leave rows"),
    ("{kind: column, column: island}", "expected a list of island values (at least one)"),
    ("{kind: column, column: island, evaluate: [A], score: [A]}", "a value cannot be both evaluated and scored"),
    ("{kind: shuffle}", "unknown split kind 'shuffle'"),
])
def test_bad_splits_are_named_at_validation(tmp_path, split, message):
    from depmesh.catalog import CatalogError
    from depmesh.examples import PENGUINS_CATALOG

    text = PENGUINS_CATALOG.read_text().replace(
        "split: {kind: random, evaluate_share: 0.3, seed: 7, key: penguin_id}", f"split: {split}")
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(CatalogError) as refused:
        load_catalog(tmp_path / "p.yaml")
    [problem] = [str(p) for p in refused.value.problems]
    assert "node models/colonies" in problem and message in problem


class Forecaster:
    """A custom task's estimator: not scikit-learn, just predict."""

    def predict(self, frame):
        return 2 * np.asarray(frame["x"], dtype="float64")


def test_a_custom_task_is_judged_by_the_metric_its_catalog_declares():
    from depmesh.catalog import MetricSpec
    from depmesh.metrics import declared_metrics

    frame = pd.DataFrame({"x": np.arange(300.0), "region": np.where(np.arange(300) % 3 == 0, "north", "south")})
    y = 2 * frame["x"].to_numpy() + np.random.default_rng(0).normal(0, 1, 300)
    model = TrainedModel(node="models/forecast", task="custom", estimator=Forecaster(), features=["x"],
                         target="y", prediction_column="pred_forecast", version="v1",
                         sample_input=frame.head(32))
    model.metrics = declared_metrics(model, MetricSpec(primary="r2", also=("neg_mean_absolute_error",)), (frame, y))
    assert model.metrics["r2"] > 0.99 and model.metrics["baseline_r2"] <= 0
    model.primary_metric = ("r2", True)
    spec = GateSpec(subgroups=("region",), subgroup_min_rows=50, subgroup_limit=0.9)
    results = {r.name: r for r in gates.evaluate_gates(model, spec, (frame, y), None)}
    assert results[gates.QUALITY].passed and results[gates.QUALITY].figures["metric"] == "r2"
    assert results[gates.SUBGROUPS].passed and results[gates.SUBGROUPS].figures["groups"] == 2
    undeclared = TrainedModel(node="models/forecast", task="custom", estimator=Forecaster(), features=["x"],
                              target="y", prediction_column="p", version="v1", metrics={"r2": 0.9})
    quality = gates.evaluate_gates(undeclared, GateSpec(), (frame, y), None)[0]
    assert not quality.passed and "has no default metric: declare model.metrics" in quality.summary


def test_scores_tables_follow_the_task(iris_model):
    from depmesh.models import score_table

    model, (frame, _) = iris_model
    multi = score_table(model, frame.head(4), ["site"])
    assert list(multi.columns) == ["site", "prediction", "probability_0", "probability_1", "probability_2",
                                   "model_version"]
    regression = TrainedModel(node="models/f", task="custom", estimator=Forecaster(), features=["x"], target="y",
                              prediction_column="p", version="v9")
    table = score_table(regression, pd.DataFrame({"x": [1.0, 2.0], "id": [7, 8]}), ["id"])
    assert list(table.columns) == ["id", "prediction", "model_version"] and table["prediction"].tolist() == [2.0, 4.0]


def test_a_fixed_evaluation_table_is_what_the_model_is_judged_on(tmp_path):
    from depmesh.assets.io import recorded_metadata

    text = CLINIC_CATALOG.read_text().replace(
        "  - name: models/progression\n", "  - name: features/holdout\n    kind: features\n    owner: team:clinical-data\n"
        "    inputs: [raw/patients]\n    compute: depmesh.examples.clinic.builders:holdout_patients\n\n"
        "  - name: models/progression\n")
    text = text.replace(
        "    inputs: [features/patients]\n    model:\n      trainer: depmesh.examples.clinic.builders:train_progression",
        "    inputs: [features/patients, features/holdout]\n    model:\n"
        "      trainer: depmesh.examples.clinic.builders:train_progression")
    text = text.replace("      params: {alpha: 1.0}\n      seed: 1\n      split: {time_column: visit_date, "
                        "train_until: 2020-10-01, evaluate_until: 2021-01-01}",
                        "      params: {alpha: 1.0}\n      seed: 1\n      split: {kind: table, evaluate: features/holdout}")
    (tmp_path / "clinic.yaml").write_text(text)
    mesh = load_catalog(tmp_path / "clinic.yaml")
    assert mesh.node("models/progression").model.split.evaluate == "features/holdout"
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        assert materialize_mesh(mesh, instance).success
        md = recorded_metadata(instance, ["models", "progression"])
        assert md["evaluation_window"] == "the fixed evaluation table features/holdout"
        assert md["metric/eval_rows"] == 88  # 442 patients, every fifth
    bad = text.replace("    inputs: [features/patients, features/holdout]\n", "    inputs: [features/patients]\n", 1)
    (tmp_path / "bad.yaml").write_text(bad)
    from depmesh.catalog import CatalogError

    with pytest.raises(CatalogError, match="the evaluation table 'features/holdout' must be one of the model's inputs"):
        load_catalog(tmp_path / "bad.yaml")
