"""The row path (small requests) against the batch path, on the saved-model fixtures: no Spark needed.

Spark parity of the row path is checked by :func:`tests.scoring.parity.assert_parity` for every twin;
here: the choice by batch size, the columnar and record forms, and that every case the row path leaves
to the batch path (errors above all) is answered exactly as before.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sparkpipe.errors import InputError
from sparkpipe.scoring.base import RowFallback
from sparkpipe.scoring.compile import ROW_PATH_MAX_ROWS, CompiledPipeline, compile_pipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"


@pytest.fixture(scope="module")
def rf() -> CompiledPipeline:
    return compile_pipeline(FIXTURES / "default_rf")


def _cases(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / name / "cases.json").read_text())["rows"]


def _batch(plan: CompiledPipeline, records: Any) -> list[dict[str, Any]]:
    """``predict`` on the batch path only."""
    cols = plan.output_columns
    arrays = plan.predict_frame(plan.frame_from_records(records), cols)
    lists = plan.as_lists(arrays, cols)
    return [dict(zip(cols, row, strict=True)) for row in zip(*lists, strict=True)]


def _fresh_rows(n: int) -> list[dict[str, Any]]:
    base = _cases("default_rf")
    rows = []
    for i in range(n):
        r = copy.deepcopy(base[i % len(base)])
        if r["age"] is not None:
            r["age"] = 20 + i
        rows.append(r)
    return rows


def _assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in g:
            np.testing.assert_allclose(
                np.asarray(g[k], dtype=float), np.asarray(w[k], dtype=float), rtol=1e-12, atol=1e-12
            )
            assert type(g[k]) is type(w[k]), k


def test_forest_pipeline_has_a_row_path_and_it_matches_the_batch_path(rf):
    assert rf.has_row_path and rf.row_max_rows == ROW_PATH_MAX_ROWS
    rows = _fresh_rows(12)
    for r in rows:
        _assert_same(rf.predict([r]), _batch(rf, [r]))
    _assert_same(rf.predict(rows), _batch(rf, rows))  # a small batch: the row path, row by row


def test_columnar_records_take_the_row_path_too(rf):
    rows = _fresh_rows(3)
    columns = {n: [r[n] for r in rows] for n, _ in rf.input_schema}
    assert len(rf.score_rows(columns)) == 3
    _assert_same(rf.predict(columns), _batch(rf, rows))


def test_the_batch_size_chooses_the_path(rf, monkeypatch):
    calls = []
    real = rf.score_rows
    monkeypatch.setattr(rf, "score_rows", lambda records: calls.append(len(records)) or real(records))
    rf.predict(_fresh_rows(ROW_PATH_MAX_ROWS))
    rf.predict(_fresh_rows(ROW_PATH_MAX_ROWS + 1))
    assert calls == [ROW_PATH_MAX_ROWS]
    big = _fresh_rows(ROW_PATH_MAX_ROWS + 1)
    _assert_same(rf.predict(big), _batch(rf, big))


@pytest.mark.parametrize(
    "change",
    [
        {"age": "thirty"},  # a value of the wrong type
        {"age": 2.5},  # a fraction in an integer column
        {"is_senior": "yes"},
        {"signup_ts": "not a time"},
        {"plan": 7},
    ],
)
def test_rejected_values_give_the_batch_paths_error(rf, change):
    row = {**_fresh_rows(1)[0], **change}
    with pytest.raises(RowFallback):
        rf.score_rows([row])
    with pytest.raises(InputError) as batch:
        rf.frame_from_records([_fresh_rows(1)[0], row])  # the batch path's error for row 1
    with pytest.raises(InputError) as row_path:
        rf.predict([_fresh_rows(1)[0], row])
    assert (row_path.value.field, str(row_path.value)) == (batch.value.field, str(batch.value))


def test_missing_fields_and_odd_records_give_the_batch_paths_error(rf):
    row = _fresh_rows(1)[0]
    del row["age"]
    for records in ([row], {n: [None] for n, _ in rf.input_schema if n != "age"}):
        with pytest.raises(RowFallback):
            rf.score_rows(records)
        with pytest.raises(InputError) as row_path:
            rf.predict(records)
        with pytest.raises(InputError) as batch:
            rf.frame_from_records(records)
        assert (row_path.value.field, str(row_path.value)) == (batch.value.field, str(batch.value))


def test_values_outside_the_row_paths_cases_are_scored_by_the_batch_path(rf):
    row = {**_fresh_rows(1)[0], "signup_ts": "0001-01-01 00:00:00", "last_login_ts": -1e10}
    _assert_same(rf.predict([row]), _batch(rf, [row]))


def test_a_pipeline_without_row_functions_scores_every_size_on_the_batch_path():
    plan = compile_pipeline(FIXTURES / "full_features_lr")
    rows = _cases("full_features_lr")
    if plan.has_row_path:
        _assert_same(plan.predict(rows), _batch(plan, rows))
        return
    assert plan.row_max_rows == 0
    with pytest.raises(RowFallback):
        plan.score_rows(rows)
    _assert_same(plan.predict(rows), _batch(plan, rows))
