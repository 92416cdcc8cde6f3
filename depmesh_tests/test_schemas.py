"""The JSON Schemas of the files a team writes (catalog, teams, failure modes): generated from the typed shapes,
published as generated, agreeing with the parsers key for key, and validating every shipped example (issue #26)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from depmesh.catalog import file_schema as fs
from depmesh.catalog import parse_contract, parse_mesh, parse_model, parse_node
from depmesh.catalog.load import TOP_KEYS
from depmesh.catalog.spec import GATE_KEYS
from depmesh.cli import main
from depmesh.examples import DEMO_CATALOG

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "docs" / "content" / "schemas"
EXAMPLES = Path(DEMO_CATALOG).parent.parent


def fields(model) -> set[str]:
    return set(model.model_fields)


# each parser's allowed keys beside the schema section that describes them
SECTIONS = [
    ("catalog top level", TOP_KEYS, fs.CatalogFile),
    ("node", parse_node.NODE_KEYS, fs.Node),
    ("model", parse_model.MODEL_KEYS, fs.Model),
    ("model.tune", parse_model.TUNE_KEYS, fs.Tune),
    ("model.metrics", parse_model.METRIC_KEYS, fs.Metrics),
    ("model.gates", GATE_KEYS, fs.Gates),
    ("model.split (time)", parse_model.SPLIT_KINDS["time"], fs.TimeSplit),
    ("model.split (random)", parse_model.SPLIT_KINDS["random"], fs.RandomSplit),
    ("model.split (column)", parse_model.SPLIT_KINDS["column"], fs.ColumnSplit),
    ("model.split (table)", parse_model.SPLIT_KINDS["table"], fs.TableSplit),
    ("tune space (int)", parse_model.SEARCH_KEYS["int"], fs.SearchInt),
    ("tune space (float)", parse_model.SEARCH_KEYS["float"], fs.SearchFloat),
    ("tune space (loguniform)", parse_model.SEARCH_KEYS["loguniform"], fs.SearchLogUniform),
    ("tune space (categorical)", parse_model.SEARCH_KEYS["categorical"], fs.SearchCategorical),
    ("contract", parse_contract.CONTRACT_KEYS, fs.Contract),
    ("contract column", parse_contract.COLUMN_KEYS, fs.Column),
    ("contract row_count", parse_contract.ROW_COUNT_KEYS, fs.RowCount),
    ("contract freshness", parse_contract.FRESHNESS_KEYS, fs.Freshness),
    ("contract distribution", parse_contract.DISTRIBUTION_KEYS, fs.Distribution),
    ("input edge", parse_contract.EDGE_KEYS, fs.Edge),
    ("rollout", parse_mesh.ROLLOUT_KEYS, fs.Rollout),
    ("rollout step", parse_mesh.STEP_KEYS, fs.RolloutStep),
    ("rollout thresholds", parse_mesh.THRESHOLD_KEYS, fs.Thresholds),
    ("serving", parse_mesh.SERVING_KEYS, fs.Serving),
    ("dependencies", parse_mesh.DEPENDENCY_KEYS, fs.Dependencies),
    ("dependencies.licenses", set(parse_mesh.LICENSE_KEYS), fs.Licenses),
    ("dependencies.audit", set(parse_mesh.AUDIT_KEYS), fs.Audit),
    ("dependencies.upgrade", set(parse_mesh.UPGRADE_KEYS), fs.Upgrade),
]


def _teams_and_modes_sections():
    from depmesh import teams
    from depmesh.failure_modes import catalogue

    return [
        ("teams file", teams.TEAMS_FILE_KEYS, fs.TeamsFile),
        ("team", teams.TEAM_KEYS, fs.Team),
        ("team member", teams.MEMBER_KEYS, fs.Member),
        ("failure-modes file", catalogue.MODES_FILE_KEYS, fs.FailureModesFile),
        ("failure mode", catalogue.MODE_KEYS, fs.FailureMode),
    ]


def test_every_section_allows_the_same_keys_in_the_parser_and_the_schema():
    disagree = {name: {"parser only": sorted(set(keys) - fields(model)), "schema only": sorted(fields(model) - set(keys))}
                for name, keys, model in SECTIONS + _teams_and_modes_sections() if set(keys) != fields(model)}
    assert disagree == {}


@pytest.mark.parametrize("kind", sorted(fs.FILES))
def test_the_published_schema_is_the_generated_one(kind):
    published = (PUBLISHED / f"{kind}.schema.json").read_text()
    assert published == fs.schema_text(kind), f"regenerate: depmesh schema {kind} -o docs/content/schemas/{kind}.schema.json"
    out = CliRunner().invoke(main, ["schema", kind])
    assert out.exit_code == 0 and json.loads(out.output) == json.loads(published)


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((PUBLISHED / f"{kind}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _plain(path: Path):
    return json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))  # YAML dates as text, as JSON has


@pytest.mark.parametrize("kind, pattern", [("catalog", "*/catalog.yaml"), ("teams", "*/teams.yaml"),
                                           ("failure-modes", "*/failure_modes.yaml")])
def test_every_shipped_file_validates_against_its_schema(kind, pattern):
    files = sorted(EXAMPLES.glob(pattern))
    assert files
    validator = _validator(kind)
    for path in files:
        assert [e.message for e in validator.iter_errors(_plain(path))] == [], path


def test_a_misspelt_key_a_wrong_kind_and_a_missing_owner_fail_the_schema_and_the_parser(tmp_path):
    """What an editor flags from the schema, `depmesh validate` refuses too, at the same node and field."""
    from depmesh.catalog import CatalogError, load_catalog

    good = _plain(DEMO_CATALOG)
    validator = _validator("catalog")
    for change, field in ((lambda n: n.update(colour="red"), "colour"), (lambda n: n.update(kind="modle"), "kind"),
                          (lambda n: n.pop("owner"), "owner")):
        data = copy.deepcopy(good)
        change(data["nodes"][3])
        errors = list(validator.iter_errors(data))
        assert errors and all(list(e.path)[:2] == ["nodes", 3] for e in errors), [e.message for e in errors]
        (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        with pytest.raises(CatalogError) as refused:
            load_catalog(tmp_path / "catalog.yaml")
        assert any(p.field == field and p.node == data["nodes"][3]["name"] for p in refused.value.problems), \
            refused.value.problems
