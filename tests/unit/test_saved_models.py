"""Models saved by earlier code still load and score identically (``tests/fixtures/models``).

Saved Spark models record the class path of every custom stage (``sparkpipe.features.stages.X``) and
served models are cached for months: a refactor that moves a class or changes a stage's params must
keep these loading, with the same predictions from Spark and from the NumPy scorer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
MODELS = sorted(p.name for p in FIXTURES.iterdir() if (p / "MLmodel").is_file())


def test_fixtures_exist():
    assert {"full_features_lr", "default_rf"} <= set(MODELS)


def _cases(name: str) -> dict:
    return json.loads((FIXTURES / name / "cases.json").read_text())


@pytest.mark.spark
@pytest.mark.parametrize("name", MODELS)
def test_saved_model_scores_as_when_saved_with_spark(spark, name):
    import importlib.util

    from sparkpipe.pipeline import load_spark_model

    spec = importlib.util.spec_from_file_location(
        "make_saved_models", FIXTURES.parent / "make_saved_models.py"
    )
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)

    model, meta = load_spark_model(str(FIXTURES / name))
    cases = _cases(name)
    df = spark.createDataFrame(
        maker._typed(cases["rows"], meta["input_schema"]), schema=maker._spark_schema(meta["input_schema"])
    )
    out = model.transform(df).toPandas()
    assert len(out) == len(cases["expected"])
    for (_, row), expected in zip(out.iterrows(), cases["expected"], strict=True):
        assert float(row["prediction"]) == expected["prediction"]
        if "probability" in expected:
            np.testing.assert_allclose(row["probability"].toArray(), expected["probability"], rtol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_saved_model_scores_as_when_saved_with_numpy(name):
    from sparkpipe.scoring.compile import compile_pipeline

    compiled = compile_pipeline(FIXTURES / name)
    cases = _cases(name)
    got = compiled.predict(cases["rows"])
    assert len(got) == len(cases["expected"])
    for row, expected in zip(got, cases["expected"], strict=True):
        assert float(row["prediction"]) == expected["prediction"]
        if "probability" in expected:
            np.testing.assert_allclose(row["probability"], expected["probability"], rtol=1e-9, atol=1e-12)
