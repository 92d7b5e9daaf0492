"""compile_pipeline: layouts, input schema, input validation, outputs, JVM-free scoring."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sparkpipe.errors import InputError, ScoringError, UnsupportedStageError
from sparkpipe.scoring import CompiledPipeline, compile_pipeline, unsupported_stages
from sparkpipe.scoring.compile import cast_column

from .parity import assert_parity

SCHEMA = "age double, income double, city string, visits int, member boolean, label double"
ROWS = [
    (25.0, 3000.0, "paris", 3, True, 0.0),
    (None, 4200.0, "berlin", 5, False, 1.0),
    (41.0, None, "paris", 1, True, 1.0),
    (35.0, 5100.0, None, 7, True, 0.0),
    (52.0, 6100.0, "rome", 2, False, 1.0),
    (29.0, 3900.0, "berlin", 4, True, 0.0),
    (61.0, 7000.0, "paris", 9, False, 1.0),
    (33.0, 3300.0, "rome", 6, True, 0.0),
]
NASTY = [
    (None, None, None, None, False, 1.0),
    (250.0, -1e9, "tokyo", 0, True, 0.0),
    (0.0, 0.0, "", 2**31 - 1, False, 1.0),
    (-5.0, 1e12, "Zürich 🚀", -3, True, 0.0),
]


def _feature_stages():
    from pyspark.ml import feature as ft

    return [
        ft.Imputer(inputCols=["age", "income"], outputCols=["age_i", "income_i"], strategy="median"),
        ft.StringIndexer(inputCol="city", outputCol="city_idx", handleInvalid="keep"),
        ft.OneHotEncoder(inputCol="city_idx", outputCol="city_vec"),
        ft.VectorAssembler(
            inputCols=["age_i", "income_i", "city_vec", "visits", "member"],
            outputCol="raw",
            handleInvalid="keep",
        ),
        ft.StandardScaler(inputCol="raw", outputCol="features", withMean=True),
    ]


@pytest.fixture(scope="module")
def data(spark):
    return spark.createDataFrame(ROWS, SCHEMA), spark.createDataFrame(NASTY, SCHEMA)


@pytest.fixture(scope="module")
def saved_features(spark, data, tmp_path_factory) -> Path:
    """A fitted feature-only PipelineModel saved once for the compile tests."""
    from pyspark.ml import Pipeline

    train, _ = data
    path = tmp_path_factory.mktemp("compile") / "features"
    Pipeline(stages=_feature_stages()).fit(train).write().save(str(path))
    return path


def _records():
    names = [c.split()[0] for c in SCHEMA.split(", ")]
    return [dict(zip(names, r, strict=True)) for r in ROWS + NASTY]


# ------------------------------------------------------------------------------- end-to-end model
def test_full_pipeline_with_logistic_regression(spark, data, tmp_path):
    """Imputer -> StringIndexer(keep) -> OneHotEncoder -> VectorAssembler -> StandardScaler -> LR."""
    if importlib.util.find_spec("sparkpipe.scoring.models") is None:
        pytest.skip("sparkpipe.scoring.models (model twins, another engineer's module) is not present yet")
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression

    train, nasty = data
    model = Pipeline(stages=[*_feature_stages(), LogisticRegression(maxIter=20, regParam=0.01)]).fit(train)
    compiled = assert_parity(model, train.union(nasty), tmp_path)
    assert compiled.output_columns == ["rawPrediction", "probability", "prediction"]
    out = compiled.predict(
        [{"age": 30, "income": 4000.5, "city": "unseen", "visits": 2, "member": True, "label": 0.0}]
    )
    assert set(out[0]) == {"rawPrediction", "probability", "prediction"}
    assert isinstance(out[0]["prediction"], float) and len(out[0]["probability"]) == 2
    assert abs(sum(out[0]["probability"]) - 1.0) < 1e-12
    spark_row = model.transform(
        spark.createDataFrame([(30.0, 4000.5, "unseen", 2, True, 0.0)], SCHEMA)
    ).collect()[0]
    assert out[0]["prediction"] == spark_row["prediction"]
    assert np.allclose(out[0]["probability"], spark_row["probability"].toArray(), atol=1e-9, rtol=0)
    desc = compiled.describe()
    assert [s["class"].rsplit(".", 1)[1] for s in desc["stages"]][-1] == "LogisticRegressionModel"


def test_index_to_string_label_is_returned(spark, data, tmp_path):
    if importlib.util.find_spec("sparkpipe.scoring.models") is None:
        pytest.skip("sparkpipe.scoring.models (model twins, another engineer's module) is not present yet")
    from pyspark.ml import Pipeline
    from pyspark.ml import feature as ft
    from pyspark.ml.classification import LogisticRegression

    train, _ = data
    label_idx = ft.StringIndexer(inputCol="city", outputCol="city_label").fit(train.na.drop(subset=["city"]))
    stages = [
        label_idx,
        ft.VectorAssembler(inputCols=["visits", "label"], outputCol="features"),
        LogisticRegression(labelCol="city_label", maxIter=10),
        ft.IndexToString(inputCol="prediction", outputCol="predictedCity", labels=label_idx.labels),
    ]
    model = Pipeline(stages=stages).fit(train.na.drop(subset=["city"]))
    compiled = assert_parity(model, train.na.drop(subset=["city"]), tmp_path)
    assert compiled.output_columns[-1] == "predictedCity"
    out = compiled.predict(
        [
            {
                "age": 1.0,
                "income": 2.0,
                "city": "paris",
                "visits": 3,
                "member": True,
                "label": 1.0,
            }
        ]
    )
    assert out[0]["predictedCity"] in label_idx.labels


# ---------------------------------------------------------------------------------------- layouts
def test_feature_pipeline_parity_and_default_outputs(spark, data, tmp_path):
    from pyspark.ml import Pipeline

    train, nasty = data
    model = Pipeline(stages=_feature_stages()).fit(train)
    compiled = assert_parity(model, train.union(nasty), tmp_path)
    assert compiled.output_columns == ["features"]  # no model: the last stage's output


def test_nested_pipeline_is_flattened_and_dirs_ordered_by_index(spark, data, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel

    train, nasty = data
    inner = Pipeline(stages=_feature_stages()[:3]).fit(train)
    rest = Pipeline(stages=_feature_stages()[3:]).fit(inner.transform(train))
    nested = PipelineModel(stages=[inner, *rest.stages])
    compiled = assert_parity(nested, train.union(nasty), tmp_path)
    assert len(compiled.stages) == 5
    # a 12-stage pipeline: directory names sort as strings differently from their indices
    from pyspark.ml import feature as ft

    many = PipelineModel(
        stages=[
            ft.Binarizer(inputCol="age" if i == 0 else f"b{i - 1}", outputCol=f"b{i}", threshold=i)
            for i in range(12)
        ]
    )
    path = tmp_path / "many"
    many.write().save(str(path))
    for d in (path / "stages").iterdir():  # strip zero padding: 00_x -> 0_x
        idx, uid = d.name.split("_", 1)
        d.rename(d.with_name(f"{int(idx)}_{uid}"))
    c = compile_pipeline(path, input_schema=[("age", "double")])
    assert [t.stage.params["outputCol"] for t in c.stages] == [f"b{i}" for i in range(12)]
    meta = next((path / "metadata").glob("part-*"))
    doc = json.loads(meta.read_text())
    doc["paramMap"]["stageUids"] = list(reversed(doc["paramMap"]["stageUids"]))
    meta.write_text(json.dumps(doc) + "\n")
    with pytest.raises(ScoringError, match="stageUids"):
        compile_pipeline(path)


def test_mlflow_model_directory_and_signature(spark, data, saved_features, tmp_path):
    """The mlflow.spark layout (MLmodel + sparkml/) compiles, and its signature is the input schema."""
    import mlflow.spark
    from mlflow.models import infer_signature
    from pyspark.ml import PipelineModel

    train, _ = data
    model = PipelineModel.load(str(saved_features))
    sample = train.drop("label").limit(3).toPandas()
    sig = infer_signature(sample)
    mlflow.spark.save_model(model, str(tmp_path / "mlmodel"), signature=sig, pip_requirements=["pyspark"])
    compiled = compile_pipeline(tmp_path / "mlmodel")
    schema = dict(compiled.input_schema)
    assert schema["age"] == "double" and schema["city"] == "string" and schema["member"] == "boolean"
    assert schema["visits"] in ("integer", "long")
    direct = compile_pipeline(saved_features)
    recs = _records()
    a = compiled.predict(recs)
    b = direct.predict(recs)
    assert json.dumps(a) == json.dumps(b) and len(a) == len(recs)  # NaN-aware comparison


def test_mlflow_signature_datetime_maps_to_timestamp(saved_features, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(saved_features, root / "sparkml")
    inputs = [
        {"name": "age", "type": "double"},
        {"name": "income", "type": "float"},
        {"name": "city", "type": "string"},
        {"name": "visits", "type": "long"},
        {"name": "member", "type": "boolean"},
        {"name": "seen_at", "type": "datetime"},
    ]
    (root / "MLmodel").write_text(
        "flavors:\n  spark:\n    model_data: sparkml\nsignature:\n"
        f"  inputs: '{json.dumps(inputs)}'\n  outputs: null\n"
    )
    compiled = compile_pipeline(root)
    assert compiled.input_schema[-1] == ("seen_at", "timestamp")
    assert compiled.input_schema[1] == ("income", "float")


def test_inferred_schema_and_extra_columns_ignored(saved_features):
    compiled = compile_pipeline(saved_features)
    assert dict(compiled.input_schema) == {
        "age": "double",
        "income": "double",
        "city": "string",
        "visits": "double",
        "member": "double",
    }
    rec = {"age": 30.0, "income": 1.0, "city": "paris", "visits": 2, "member": 1, "unknown": "whatever"}
    out = compiled.predict([rec])
    assert list(out[0]) == ["features"] and len(out[0]["features"]) == 7
    columnar = compiled.predict({k: [v] for k, v in rec.items()})
    assert columnar == out


def test_unsupported_stage_is_named(spark, data, tmp_path):
    from pyspark.ml import Pipeline
    from pyspark.ml import feature as ft

    train, _ = data
    stages = [
        ft.SQLTransformer(statement="SELECT *, age * 2 AS age2 FROM __THIS__"),
        ft.VectorAssembler(inputCols=["age2"], outputCol="v", handleInvalid="keep"),
        ft.VectorSlicer(inputCol="v", outputCol="s", names=["age2"]),
    ]
    path = tmp_path / "sql"
    Pipeline(stages=stages).fit(train).write().save(str(path))
    assert unsupported_stages(path) == [
        "org.apache.spark.ml.feature.SQLTransformer",
        "org.apache.spark.ml.feature.VectorSlicer",
    ]
    with pytest.raises(UnsupportedStageError, match="SQLTransformer") as info:
        compile_pipeline(path)
    assert "VectorSlicer" in str(info.value) and "names" in str(info.value)


def test_describe(saved_features):
    compiled = compile_pipeline(saved_features)
    d = compiled.describe()
    assert d["engine"] == "numpy"
    assert [s["twin"] for s in d["stages"]] == [
        "ImputerTwin",
        "StringIndexerTwin",
        "OneHotEncoderTwin",
        "VectorAssemblerTwin",
        "StandardScalerTwin",
    ]
    assert d["output_columns"] == ["features"]
    assert unsupported_stages(saved_features) == []


# --------------------------------------------------------------------------------- input errors
@pytest.fixture(scope="module")
def typed(saved_features) -> CompiledPipeline:
    schema = [
        ("age", "double"),
        ("income", "float"),
        ("city", "string"),
        ("visits", "integer"),
        ("member", "boolean"),
    ]
    return compile_pipeline(saved_features, input_schema=schema)


GOOD = {"age": 30.0, "income": 1.5, "city": "paris", "visits": 2, "member": True}


@pytest.mark.parametrize(
    ("row", "field", "expected"),
    [
        ({k: v for k, v in GOOD.items() if k != "city"}, "instances[1].city", "string"),
        ({**GOOD, "age": "thirty"}, "instances[1].age", "double"),
        ({**GOOD, "age": [1.0]}, "instances[1].age", "double"),
        ({**GOOD, "city": 7}, "instances[1].city", "string"),
        ({**GOOD, "visits": 2.5}, "instances[1].visits", "integer"),
        ({**GOOD, "member": "yes"}, "instances[1].member", "boolean"),
        ({**GOOD, "income": {"a": 1}}, "instances[1].income", "float"),
    ],
)
def test_input_errors_name_the_field(typed, row, field, expected):
    with pytest.raises(InputError) as info:
        typed.predict([GOOD, row])
    assert info.value.field == field
    assert info.value.expected == expected
    assert field in str(info.value) and expected in str(info.value)


def test_missing_column_in_columnar_records(typed):
    with pytest.raises(InputError) as info:
        typed.predict({"age": [1.0], "income": [1.0], "city": ["x"], "visits": [1]})
    assert info.value.field == "member"


def test_casting_rules():
    assert cast_column("f", "float", [0.1, None]).tolist()[0] == float(np.float32(0.1))
    assert np.isnan(cast_column("d", "double", [None, 1])[0])
    assert cast_column("b", "boolean", [True, False, None, 1]).tolist()[:2] == [1.0, 0.0]
    assert cast_column("s", "string", ["a", None]).tolist() == ["a", None]
    ts = cast_column(
        "t",
        "timestamp",
        [
            "2024-01-02T03:04:05Z",
            "2024-01-02T04:04:05+01:00",
            dt.datetime(2024, 1, 2, 3, 4, 5),
            1704164645,
            None,
        ],
    )
    assert ts.dtype == np.dtype("datetime64[us]")
    assert (ts[:4] == np.datetime64("2024-01-02T03:04:05", "us")).all() and np.isnat(ts[4])
    d = cast_column("d", "date", ["2024-01-02", dt.date(2024, 1, 2), "2024-01-02T23:00:00"])
    assert (d == np.datetime64("2024-01-02", "us")).all()
    with pytest.raises(InputError, match="timestamp"):
        cast_column("t", "timestamp", ["not a date"])
    with pytest.raises(InputError):
        cast_column("i", "long", [float("inf")])


@pytest.mark.parametrize("t", ["double", "float", "integer", "long"])
@pytest.mark.parametrize(
    ("tail", "error"),
    [
        ([], None),
        ([2.0], None),  # a whole float in an integer column
        ([2.5], "integer"),  # a fraction: refused in integer columns, a number in the others
        ([None], None),
        ([True], None),
        ([float("nan")], None),
        ([float("-inf")], "integer"),  # not a whole number: refused in integer columns
        (["1.5"], "got str"),
        ([[1.0]], "got list"),
        ([10**400], "overflow"),
    ],
)
def test_large_numeric_columns_cast_like_small_ones(t, tail, error):
    """Columns of more than 64 values take one C pass (array('d')); every value the checked path
    refuses or converts is refused or converted alike, with the same message naming the row."""
    from sparkpipe.scoring.compile import _FAST_CAST_ROWS

    small = [3, 4.0, *tail]
    large = list(range(_FAST_CAST_ROWS + 1)) + small
    if error == "integer" and t in ("double", "float"):
        error = None
    if error is None:
        got = cast_column("c", t, large)
        assert np.array_equal(got[-len(small) :], cast_column("c", t, small), equal_nan=True)
        assert np.array_equal(got[: _FAST_CAST_ROWS + 1], np.arange(_FAST_CAST_ROWS + 1, dtype=float))
        return
    with pytest.raises((InputError, OverflowError)) as small_exc:
        cast_column("c", t, small)
    with pytest.raises(type(small_exc.value)) as large_exc:
        cast_column("c", t, large)
    if isinstance(small_exc.value, InputError):
        assert large_exc.value.row == small_exc.value.row + _FAST_CAST_ROWS + 1
        assert str(small_exc.value).split(":", 1)[-1] == str(large_exc.value).split(":", 1)[-1]


def test_unseen_and_null_rows_score_like_spark_keep(typed):
    out = typed.predict([GOOD, {**GOOD, "city": None, "age": None}, {**GOOD, "city": "atlantis"}])
    assert out[1]["features"] != out[0]["features"]
    assert np.isfinite(out[1]["features"]).all()


# --------------------------------------------------------------------------------------- JVM-free
def test_compile_and_predict_without_jvm(saved_features):
    """A fresh interpreter compiles and scores without importing pyspark or py4j (no JVM)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from sparkpipe.scoring.compile import compile_pipeline
        c = compile_pipeline({str(saved_features)!r})
        out = c.predict([{{"age": 30.0, "income": 10.0, "city": "paris", "visits": 1, "member": True}}])
        assert len(out[0]["features"]) == 7
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j"))
        print(json.dumps(bad))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []
