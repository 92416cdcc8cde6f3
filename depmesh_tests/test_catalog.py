"""Loading and validating catalogs: every problem is named by file, line, node and field."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from depmesh.catalog import CatalogError, load_catalog
from depmesh.cli import main

HEADER = "mesh: test\nnodes:\n"
SOURCE = """\
  - name: raw/a
    kind: dataset
    owner: team:ingestion
    compute: depmesh.examples.flights.sources:load_airlines
"""
SPLIT = "split: {time_column: time_hour, train_until: 2013-10-01, evaluate_until: 2013-12-01}"


def catalog(*nodes: str) -> str:
    return HEADER + SOURCE + "".join(textwrap.indent(textwrap.dedent(n), "  ") for n in nodes)


def problems_of(write_catalog, text: str) -> list[str]:
    path = write_catalog(text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return [str(p) for p in info.value.problems]


def test_demo_catalog_is_valid(demo_mesh):
    assert len(demo_mesh.nodes) == 16
    kinds = {n.kind for n in demo_mesh.nodes}
    assert kinds == {"dataset", "features", "model", "scores", "consumer"}
    assert demo_mesh.node("models/arr_delay").model.target == "arr_delay"
    assert demo_mesh.node("raw/flights").contract.column("origin").allowed == ("EWR", "JFK", "LGA")


# Each bad catalog, and the words its one problem must carry (file:line: node: field: message).
BAD_CATALOGS = {
    "unknown_node_key": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputz: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["mesh.yaml:10", "node features/b", "field inputz", "unknown key 'inputz'"],
    ),
    "wrong_type_seed": (
        catalog(f"""\
        - name: models/m
          kind: model
          owner: team:m
          inputs: [raw/a]
          model:
            trainer: depmesh.examples.flights.trainers:train_dep_delay
            target: y
            seed: thirteen
            {SPLIT}
        """),
        ["node models/m", "field model.seed", "expected a whole number, got str 'thirteen'"],
    ),
    "missing_owner": (
        catalog("""\
        - name: features/b
          kind: features
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["node features/b", "field owner", "missing required key 'owner'"],
    ),
    "duplicate_node": (
        catalog("""\
        - name: raw/a
          kind: dataset
          owner: team:x
          compute: depmesh.examples.flights.sources:load_planes
        """),
        ["mesh.yaml:7", "node raw/a", "field name", "duplicate node name (first declared at line 3)"],
    ),
    "undeclared_input": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a, raw/weather]
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["node features/b", "field inputs", "input 'raw/weather' is not declared in this catalog"],
    ),
    "cycle": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a, features/c]
          compute: depmesh.examples.flights.transforms:aircraft
        - name: features/c
          kind: features
          owner: team:f
          inputs: [features/b]
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["field inputs", "dependency cycle (each feeds the next): features/b -> features/c -> features/b"],
    ),
    "trainer_not_importable": (
        catalog(f"""\
        - name: models/m
          kind: model
          owner: team:m
          inputs: [raw/a]
          model:
            trainer: depmesh.examples.flights.trainers:train_nothing
            target: y
            {SPLIT}
        """),
        ["node models/m", "field model.trainer", "cannot import 'depmesh.examples.flights.trainers:train_nothing'",
         "AttributeError"],
    ),
    "trainer_module_missing": (
        catalog(f"""\
        - name: models/m
          kind: model
          owner: team:m
          inputs: [raw/a]
          model:
            trainer: no_such_package.train:fit
            target: y
            {SPLIT}
        """),
        ["field model.trainer", "cannot import 'no_such_package.train:fit'", "ModuleNotFoundError"],
    ),
    "unknown_dtype": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              seats: {dtype: integer}
        """),
        ["mesh.yaml:14", "node features/b", "field contract.columns.seats.dtype", "unknown dtype 'integer'"],
    ),
    "range_min_above_max": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              seats: {dtype: float64, min: 500, max: 1}
        """),
        ["field contract.columns.seats", "min (500) is greater than max (1)"],
    ),
    "unknown_kind": (
        catalog("""\
        - name: features/b
          kind: feature_table
          owner: team:f
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["node features/b", "field kind", "unknown kind 'feature_table'"],
    ),
    "model_without_model_section": (
        catalog("""\
        - name: models/m
          kind: model
          owner: team:m
          inputs: [raw/a]
        """),
        ["node models/m", "field model", "missing required key 'model'"],
    ),
    "split_backwards": (
        catalog("""\
        - name: models/m
          kind: model
          owner: team:m
          inputs: [raw/a]
          model:
            trainer: depmesh.examples.flights.trainers:train_dep_delay
            target: y
            split: {time_column: t, train_until: 2013-12-01, evaluate_until: 2013-10-01}
        """),
        ["field model.split", "train_until must be before evaluate_until"],
    ),
    "duplicate_yaml_key": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          owner: team:g
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["mesh.yaml:10", "duplicate key 'owner'"],
    ),
    "bad_asset_name": (
        catalog("""\
        - name: features/flight-weather
          kind: features
          owner: team:f
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["field name", "'features/flight-weather' is not a valid asset name"],
    ),
    "invalid_yaml": ("mesh: test\nnodes: [\n  - name: a\n", ["mesh.yaml:", "not valid YAML"]),
    "bad_schedule": (
        catalog(f"""\
        - name: models/m
          kind: model
          owner: team:m
          inputs: [raw/a]
          model:
            trainer: depmesh.examples.flights.trainers:train_dep_delay
            target: y
            schedule: every monday
            {SPLIT}
        """),
        ["node models/m", "field model.schedule", "'every monday' is not a cron schedule like '0 3 * * 1'"],
    ),
    # malformed contracts
    "unknown_expectation": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              seats: {dtype: float64}
            expectations:
              - {type: expect_column_values_to_be_purple, column: seats}
        """),
        ["node features/b", "field contract.expectations[0].type", "unknown expectation 'expect_column_values_to_be_purple'"],
    ),
    "unknown_severity": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              seats: {dtype: float64, min: 1, severity: FATAL}
        """),
        ["node features/b", "field contract.columns.seats.severity", "unknown severity 'FATAL' (known: ERROR, WARN)"],
    ),
    "edge_reads_column_producer_does_not_output": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              tailnum: {dtype: string}
              seats: {dtype: float64}
        - name: features/c
          kind: features
          owner: team:f
          inputs:
            - {node: features/b, columns: [tailnum, engines]}
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["node features/c", "field inputs.features/b.columns",
         "reads column(s) engines that features/b does not output (its contract declares tailnum, seats)"],
    ),
    "expectation_on_undeclared_column": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              seats: {dtype: float64}
            distribution:
              - {column: engines, stat: mean, max_change: 1}
        """),
        ["field contract.distribution[0].column", "column 'engines' is not one of this node's contract columns (seats)"],
    ),
    "distribution_unknown_stat": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              seats: {dtype: float64}
            distribution:
              - {column: seats, stat: median, max_change: 1}
        """),
        ["field contract.distribution[0].stat", "unknown stat 'median' (known: mean, quantiles, share)"],
    ),
    "latency_budget_on_a_table": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs:
            - {node: raw/a, latency_p95_ms: 20}
          compute: depmesh.examples.flights.transforms:aircraft
        """),
        ["field inputs.raw/a.latency_p95_ms", "a latency budget applies to a model's predictions, and raw/a is a dataset"],
    ),
    "null_fraction_out_of_range": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              seats: {dtype: float64, max_null_fraction: 1.5}
        """),
        ["field contract.columns.seats.max_null_fraction", "must be between 0 and 1, got 1.5"],
    ),
    "freshness_unreadable_age": (
        catalog("""\
        - name: features/b
          kind: features
          owner: team:f
          inputs: [raw/a]
          compute: depmesh.examples.flights.transforms:aircraft
          contract:
            columns:
              seats: {dtype: float64}
            freshness: {max_age: soon}
        """),
        ["field contract.freshness.max_age", "expected a positive age like 36h, 90m or 2d, got 'soon'"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CATALOGS))
def test_bad_catalog_names_file_node_and_field(write_catalog, case):
    text, expected = BAD_CATALOGS[case]
    problems = problems_of(write_catalog, text)
    assert len(problems) == 1, problems
    for words in expected:
        assert words in problems[0], f"{words!r} not in {problems[0]!r}"


def test_every_problem_is_reported_at_once(write_catalog):
    text = catalog("""\
    - name: features/b
      kind: features
      owner: team:f
      inputs: [raw/nope]
      colour: blue
      compute: depmesh.examples.flights.transforms:aircraft
      contract:
        columns:
          x: {dtype: decimal}
    """)
    problems = problems_of(write_catalog, text)
    assert len(problems) == 3
    assert any("unknown key 'colour'" in p for p in problems)
    assert any("unknown dtype 'decimal'" in p for p in problems)
    assert any("input 'raw/nope' is not declared" in p for p in problems)


def test_missing_catalog_file_is_a_catalog_error(tmp_path):
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "absent.yaml")


def test_bare_owner_becomes_a_team(write_catalog):
    mesh = load_catalog(write_catalog(HEADER + SOURCE.replace("team:ingestion", "ingestion")))
    assert mesh.node("raw/a").owner == "team:ingestion"


def test_validate_command_exit_codes(write_catalog, demo_mesh):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(demo_mesh.path)])
    assert ok.exit_code == 0, ok.output
    assert "is valid: 16 nodes" in ok.output
    bad = runner.invoke(main, ["validate", str(write_catalog(BAD_CATALOGS["cycle"][0]))])
    assert bad.exit_code == 1
    assert "dependency cycle" in bad.output
    malformed = runner.invoke(main, ["validate", str(write_catalog(BAD_CATALOGS["unknown_expectation"][0], "c.yaml"))])
    assert malformed.exit_code == 1
    assert "field contract.expectations[0].type: unknown expectation" in malformed.output


def test_show_lists_nodes_in_dependency_order(demo_mesh):
    result = CliRunner().invoke(main, ["show", str(demo_mesh.path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    position = {name: i for i, line in enumerate(lines) for name in [line.split(" ")[0]]}
    for node in demo_mesh.nodes:
        assert node.name in position
        for parent in node.inputs:
            assert position[parent] < position[node.name]
    arr = next(line for line in lines if line.startswith("models/arr_delay "))
    assert "delay-models" in arr and "models/dep_delay" in arr


def chain_catalog(n: int) -> str:
    lines = ["mesh: chain", "nodes:",
             "  - {name: raw/n0, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source}"]
    lines += [f"  - {{name: features/n{i}, kind: features, owner: team:a, inputs: [{'raw' if i == 1 else 'features'}/n{i - 1}], "
              "compute: depmesh.examples.synthetic:combine}" for i in range(1, n)]
    return "\n".join(lines) + "\n"


def test_too_deep_a_mesh_is_rejected_with_the_limit_named(write_catalog):
    from depmesh.catalog.load import MAX_CHAIN_DEPTH

    problems = problems_of(write_catalog, chain_catalog(MAX_CHAIN_DEPTH + 1))
    assert len(problems) == 1
    assert f"the longest dependency chain has {MAX_CHAIN_DEPTH + 1:,} nodes (raw/n0 -> ... -> features/n{MAX_CHAIN_DEPTH})" in problems[0]
    assert "split the mesh" in problems[0]


def test_a_mesh_deeper_than_dagster_loads_by_default_loads(write_catalog):
    """A 2,500-level chain fails in plain Dagster 1.13 with RecursionError; depmesh loads it."""
    from depmesh.build import MESH_JOB, build_definitions

    mesh = load_catalog(write_catalog(chain_catalog(2500)))
    defs = build_definitions(mesh)
    assert len(defs.resolve_job_def(MESH_JOB).asset_layer.selected_asset_keys) == 2500 + 1  # + the impact report


def test_an_unimportable_module_is_reported_once_with_the_hint(write_catalog):
    nodes = "".join(f"""\
  - name: features/f{i}
    kind: features
    owner: team:f
    inputs: [raw/a]
    compute: team_code.features:build_{i}
""" for i in range(4))
    problems = problems_of(write_catalog, HEADER + SOURCE + nodes)
    assert len(problems) == 1, problems
    [problem] = problems
    assert "cannot import module 'team_code.features', used by 4 nodes (features/f0, features/f1" in problem
    assert "ModuleNotFoundError" in problem and "set PYTHONPATH" in problem
