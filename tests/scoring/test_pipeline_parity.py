"""The served artifact itself: every default pipeline `sparkpipe run` builds, scored by Spark and by the
NumPy plan on fresh rows plus nasty ones (nulls everywhere, unseen categories, out-of-range values)."""

from __future__ import annotations

import datetime as dt

import pytest

from sparkpipe.config import build_config
from sparkpipe.pipeline import fit_model, prepare_data

from .parity import assert_parity

pytestmark = [pytest.mark.spark]

UTC = dt.UTC


def _nasty_churn_rows(spark, like):
    rows = [
        # every feature missing
        dict.fromkeys(like.columns),
        # unseen categories, extreme numbers, far-future timestamps
        {
            "customer_id": "x1",
            "signup_ts": dt.datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC),
            "last_login_ts": dt.datetime(1970, 1, 1, tzinfo=UTC),
            "age": 130,
            "is_senior": True,
            "plan": "platinum-unseen",
            "region": "mars",
            "payment_method": "barter",
            "tenure_months": 10_000,
            "monthly_charges": 1e9,
            "total_charges": -5.0,
            "support_calls": 999,
            "churned": 1,
        },
        # leap day at midnight, zeros
        {
            "customer_id": "x2",
            "signup_ts": dt.datetime(2024, 2, 29, 0, 0, tzinfo=UTC),
            "last_login_ts": dt.datetime(2024, 2, 29, 0, 0, tzinfo=UTC),
            "age": 0,
            "is_senior": False,
            "plan": "",
            "region": "north",
            "payment_method": None,
            "tenure_months": 0,
            "monthly_charges": 0.0,
            "total_charges": 0.0,
            "support_calls": 0,
            "churned": 0,
        },
    ]
    from pyspark.sql.types import StructField, StructType

    nullable = StructType([StructField(f.name, f.dataType, True) for f in like.schema])
    return spark.createDataFrame(rows, nullable)


@pytest.mark.parametrize("algorithm", ["logistic_regression", "random_forest", "gbt", "naive_bayes", "mlp"])
def test_default_churn_pipeline_scores_identically(spark, tmp_path, algorithm):
    cfg = build_config(
        {
            "data": {"input_path": "builtin:churn", "rows": 1500, "output_path": str(tmp_path / "out")},
            "features": {"target": "churned"},
            "model": {
                "algorithm": algorithm,
                "hyperparameters": {"maxIter": 10} if algorithm in ("gbt", "mlp") else {},
            },
            "mlflow": {"enabled": False},
        }
    )
    data = prepare_data(spark, cfg)
    fit = fit_model(spark, cfg, data)
    model = fit.model
    fresh = data.test.drop("label").limit(200)
    nasty = _nasty_churn_rows(spark, fresh)
    rows = fresh.select([fresh[c].cast(t) for c, t in nasty.dtypes]).unionByName(nasty)
    served = rows.drop("churned")  # requests carry no label
    assert_parity(model, served, tmp_path, input_schema=fit.plan.input_schema)


@pytest.mark.parametrize(
    ("dataset", "algorithm"),
    [("taxi", "glm"), ("taxi", "linear_regression"), ("segments", "kmeans"), ("iris", "logistic_regression")],
)
def test_other_default_pipelines_score_identically(spark, tmp_path, dataset, algorithm):
    cfg = build_config(
        {
            "data": {"input_path": f"builtin:{dataset}", "rows": 1000, "output_path": str(tmp_path / "out")},
            "model": {"algorithm": algorithm},
            "mlflow": {"enabled": False},
        }
    )
    data = prepare_data(spark, cfg)
    fit = fit_model(spark, cfg, data)
    model = fit.model
    served = (data.test or data.train).drop("label", *([data.target] if data.target else [])).limit(200)
    assert_parity(model, served, tmp_path, input_schema=fit.plan.input_schema)
