"""The penguins mesh end to end: a three-class classifier whose probability for
each species feeds a regressor, a clustering model, scores with one
probability per class; every contract and gate on the way."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import AssetKey, instance_for_test

from depmesh.assets import MeshStore
from depmesh.assets.io import recorded_metadata, storage_dir
from depmesh.catalog import load_catalog
from depmesh.examples import PENGUINS_CATALOG
from depmesh_tests.conftest import materialize_mesh

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="module")
def penguins_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("penguins")
    with instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_mesh(load_catalog(PENGUINS_CATALOG), instance, sample=1.0)
        yield instance, result


def test_the_penguins_mesh_runs_end_to_end_and_records_a_release(penguins_run):
    instance, result = penguins_run
    assert result.success
    built = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
    assert built == {"raw/penguins", "features/penguins", "models/species", "models/body_mass", "models/colonies",
                     "scores/species", "releases/penguins", "reports/penguins/impact", "serving/penguins"}
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations()
              if not e.passed and e.severity.value == "ERROR"]
    assert failed == []
    release = recorded_metadata(instance, ["releases", "penguins"])
    assert release["new_release"] is True


def test_the_regressor_reads_the_classifier_s_probability_for_each_species(penguins_run):
    instance, _ = penguins_run
    store = MeshStore(storage_dir(instance), instance=instance)
    species, body_mass = store.load(["models", "species"]), store.load(["models", "body_mass"])
    assert species.output_columns() == [f"pred_species_{s}" for s in SPECIES]
    assert set(species.output_columns()) <= set(body_mass.features)
    assert recorded_metadata(instance, ["models", "body_mass"])["trained_against"] == {"models/species": species.version}
    frame = store.load(["features", "penguins"]).head(5)
    proba = species.predict_proba(frame)
    assert proba.shape == (5, 3) and np.allclose(proba.sum(axis=1), 1)
    assert body_mass.predict(frame).shape == (5,)  # computes the species probabilities itself, with that version


def test_species_scores_carry_a_probability_per_class(penguins_run):
    instance, _ = penguins_run
    scores = MeshStore(storage_dir(instance), instance=instance).load(["scores", "species"])
    columns = [f"probability_{s}" for s in SPECIES]
    assert set(columns) <= set(scores.columns)
    assert np.allclose(scores[columns].sum(axis=1), 1)
    assert set(scores["prediction"]) <= set(SPECIES)
    assert (scores["prediction"] == scores["actual"]).mean() > 0.9
    md = recorded_metadata(instance, ["models", "species"])
    assert md["metric/roc_auc"] > 0.9 and md["task"] == "classification"
    assert instance.get_latest_materialization_event(AssetKey(["models", "colonies"])) is not None


def test_declared_scorer_metrics_are_what_the_quality_gate_judges(penguins_run):
    instance, result = penguins_run
    species = recorded_metadata(instance, ["models", "species"])
    for name in ("f1_macro", "accuracy", "roc_auc_ovr", "baseline_f1_macro"):
        assert f"metric/{name}" in species, name
    assert species["metric/baseline_f1_macro"] < species["metric/f1_macro"]
    gates = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    quality = gates[("models/species", "gate_quality")]
    assert quality.metadata["metric"].value == "f1_macro"
    assert quality.metadata["against"].value == "naive baseline (depmesh's dummy estimator)"
    mass = gates[("models/body_mass", "gate_quality")]
    assert mass.metadata["metric"].value == "neg_mean_absolute_error"  # a loss, negated: higher is better
    assert mass.passed and mass.metadata["value"].value > mass.metadata["reference"].value


def test_an_unknown_scorer_is_named_at_validation(tmp_path):
    from depmesh.catalog import CatalogError

    text = PENGUINS_CATALOG.read_text().replace("primary: f1_macro", "primary: f1_makro")
    (tmp_path / "penguins.yaml").write_text(text)
    with pytest.raises(CatalogError) as refused:
        load_catalog(tmp_path / "penguins.yaml")
    [problem] = [str(p) for p in refused.value.problems]
    assert "node models/species" in problem and "model.metrics.primary" in problem
    assert "'f1_makro' is not a scikit-learn scorer" in problem


def test_each_model_is_judged_on_its_own_kind_of_split(penguins_run):
    instance, _ = penguins_run
    windows = {m: recorded_metadata(instance, ["models", m])["evaluation_window"]
               for m in ("species", "body_mass", "colonies")}
    assert windows["species"] == "[2009-01-01, 2009-02-15) on observed"
    assert windows["body_mass"] == "island in ['Torgersen'] evaluated, the rest trained on"
    assert windows["colonies"].startswith("a seeded random split (seed 7, by penguin_id): 30% evaluated")
    store = MeshStore(storage_dir(instance), instance=instance)
    assert store.load(["models", "colonies"]).split.key == "penguin_id"  # the split travels in the artifact
