"""Records conform to the shipped JSON Schema (checked with jsonschema directly, not through rsabench's
own reader), and CellRecord reads and writes them without loss."""

from __future__ import annotations

import copy
import json
import re
from importlib.resources import files

import jsonschema
import pytest

from rsabench.plugins import get_plugins
from rsabench.records import SCHEMA, InvalidRecord, validate_record
from rsabench.results import CellRecord
from rsabench.runner import RunOptions, Session

SCHEMA_DOC = json.loads(files("rsabench").joinpath("schemas/cell-2.schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> list[dict]:
    runs = tmp_path_factory.mktemp("runs")
    options = RunOptions(weights="random", image_size=32, epochs=1, layers=("features.1", "features.4"), no_cache=True)
    session = Session(get_plugins(), options)
    cells = session.plan(["kriegeskorte2008", "synthetic"], ["alexnet"], ["frozen", "dissim"], [0], [], runs)
    for cell in cells:
        session.run(cell)
    return [json.loads(c.path.read_text()) for c in cells]


def test_the_schema_is_a_valid_draft_2020_12_schema_for_this_version():
    jsonschema.Draft202012Validator.check_schema(SCHEMA_DOC)
    assert SCHEMA_DOC["properties"]["schema"]["const"] == SCHEMA


def test_every_written_record_conforms(written):
    assert len(written) == 2 + 2 * 2  # kriegeskorte2008: one target; synthetic: two
    for doc in written:
        jsonschema.validate(doc, SCHEMA_DOC, cls=jsonschema.Draft202012Validator)


def test_cell_record_round_trips_exactly(written):
    for doc in written:
        record = CellRecord.from_dict(doc)
        assert record.to_dict() == doc
        assert all(e.score is not None for e in record.scores)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d["manifest"].pop("runtime"), "manifest lacks 'runtime'"),
        (lambda d: d["scores"][0].update(score=None), "scores[0].score"),
        (lambda d: d["per_layer_final"][0].update(score=None), "per_layer_final[0]"),
        (lambda d: d["config"].update(seed=-1), "config.seed"),
        (lambda d: d["config"].update(trains=not d["config"]["trains"]), "config.train"),
        (lambda d: d["selection"].update(epoch="0"), "selection.epoch has the wrong type (str, expected integer)"),
        (lambda d: d["splits"]["92"].update(test=[1.5]), "splits.92.test[0]"),
    ],
)
def test_the_schema_names_what_is_wrong(written, damage, message):
    doc = copy.deepcopy(written[0])
    damage(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA_DOC, cls=jsonschema.Draft202012Validator)
    with pytest.raises(InvalidRecord, match="^" + re.escape(message)):
        validate_record(doc)
