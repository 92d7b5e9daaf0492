"""Parity of the NumPy twins of Spark's built-in feature stages with Spark itself (nasty rows included)."""

from __future__ import annotations

import pytest

from sparkpipe.errors import InputError
from sparkpipe.scoring.features import murmur3_bytes, spark_hash

from .parity import assert_both_reject, assert_parity

pytestmark = pytest.mark.spark

NAN = float("nan")


@pytest.fixture(scope="module")
def train(spark):
    rows = [
        (1.0, 10, "red", "The quick brown fox", 0.5, True, 1.0),
        (2.0, 20, "blue", "jumps over the lazy dog", 1.5, False, 0.0),
        (None, 30, "red", "Hello   World", -0.5, True, 1.0),
        (4.0, None, "green", "ÜBER café ümlaut naïve", 2.5, None, 0.0),
        (5.0, 50, None, "a b c a b c", 3.5, False, 1.0),
        (6.5, 60, "blue", "", 4.5, True, 0.0),
        (7.0, 70, "red", "Spark is great; Spark is fast!", 5.5, False, 1.0),
        (8.0, 80, "blue", "emoji 😀 text 日本語", 6.5, True, 0.0),
    ]
    schema = "x double, n int, color string, text string, y double, flag boolean, label double"
    return spark.createDataFrame(rows, schema)


@pytest.fixture(scope="module")
def nasty(spark):
    """Rows with nulls, NaN, unseen categories, out-of-range values, empty strings and unicode."""
    rows = [
        (None, None, None, "  leading and trailing  ", None, None, 1.0),
        (NAN, 5, "purple", "\u0130stanbul \u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3", 1e6, False, 0.0),
        (-1000.0, -7, "", "tabs\tand\nnewlines", -1e6, True, 1.0),
        (3.0, 40, "red", "the THE The", 0.0, None, 0.0),
        (1e12, 2**31 - 1, "blue", "   ", 2.0, True, 1.0),
        (0.0, 0, "ReD", "x", -0.0, False, 0.0),
    ]
    schema = "x double, n int, color string, text string, y double, flag boolean, label double"
    return spark.createDataFrame(rows, schema)


@pytest.fixture(scope="module")
def nasty_nulls(nasty):
    """``nasty`` with NaN replaced by null: where Spark treats NaN and null differently, a frame
    (which cannot tell them apart) follows the null semantics of a JSON request."""
    from pyspark.sql import functions as F

    return nasty.withColumn("x", F.when(F.isnan("x"), None).otherwise(F.col("x")))


def _ft():
    from pyspark.ml import feature

    return feature


# -------------------------------------------------------------------------------------------- Imputer
def test_imputer_strategies(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    stages = [
        ft.Imputer(inputCols=["x", "n", "y"], outputCols=[f"x_{s}", f"n_{s}", f"y_{s}"], strategy=s)
        for s in ("mean", "median", "mode")
    ]
    assert_parity(Pipeline(stages=stages).fit(train), train.union(nasty), tmp_path)


def test_imputer_missing_value_and_integer_cast(spark, tmp_path):
    """missingValue=-1 imputes nulls and -1, and the surrogate is truncated for integer columns."""
    ft = _ft()
    df = spark.createDataFrame([(1, 1.0), (2, -1.0), (None, 4.0), (-1, None)], "i int, d double")
    m = ft.Imputer(inputCols=["i", "d"], outputCols=["io", "do"], missingValue=-1.0).fit(df)
    compiled = assert_parity(m, df, tmp_path)
    assert compiled.predict([{"i": None, "d": -1.0}], columns=["io", "do"]) == [{"io": 1.0, "do": 2.5}]


def test_imputer_single_column_float(spark, tmp_path):
    ft = _ft()
    df = spark.createDataFrame([(1.1,), (2.2,), (None,), (3.3,)], "f float")
    m = ft.Imputer(inputCol="f", outputCol="fo").fit(df)
    assert_parity(m, df, tmp_path)


# ------------------------------------------------------------------------------------- StringIndexer
def test_string_indexer_keep(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    stages = [
        ft.StringIndexer(
            inputCol="color", outputCol=f"ci_{order}", handleInvalid="keep", stringOrderType=order
        )
        for order in ("frequencyDesc", "alphabetAsc")
    ]
    model = Pipeline(stages=stages).fit(train.na.drop(subset=["color"]))
    assert_parity(model, train.union(nasty), tmp_path)


def test_string_indexer_multi_column_numeric_and_boolean_inputs(spark, train, nasty, tmp_path):
    """Numeric inputs are cast to strings ('10', '1.0', '1.0E12') before lookup."""
    ft = _ft()
    m = ft.StringIndexer(
        inputCols=["color", "n", "x"], outputCols=["ci", "nidx", "xidx"], handleInvalid="keep"
    ).fit(train)
    assert_parity(m, train.union(nasty), tmp_path)


def test_string_indexer_error_and_skip_reject_unseen_and_null(spark, train, tmp_path):
    ft = _ft()
    fitted = ft.StringIndexer(inputCol="color", outputCol="ci").fit(train.na.drop(subset=["color"]))
    ok = spark.createDataFrame([("red", 1), ("blue", 2)], "color string, k int")
    assert_parity(fitted, ok, tmp_path)
    unseen = spark.createDataFrame([("red", 1), ("purple", 2)], "color string, k int")
    err = assert_both_reject(fitted, unseen, tmp_path / "a", field="instances[1].color")
    assert "purple" in str(err)
    null = spark.createDataFrame([(None, 1)], "color string, k int")
    assert_both_reject(fitted, null, tmp_path / "b", field="instances[0].color")
    skip = fitted.copy().setHandleInvalid("skip")
    assert_both_reject(skip, unseen, tmp_path / "c", field="instances[1].color")


# ------------------------------------------------------------------------------------- OneHotEncoder
@pytest.mark.parametrize("invalid", ["keep", "error"])
def test_one_hot_encoder(spark, train, nasty, tmp_path, invalid):
    from pyspark.ml import Pipeline

    ft = _ft()
    encoders = [
        ft.OneHotEncoder(
            inputCols=["ci", "ti"], outputCols=[f"co{d}", f"to{d}"], dropLast=bool(d), handleInvalid=invalid
        )
        for d in (0, 1)
    ]
    pipe = Pipeline(
        stages=[
            ft.StringIndexer(inputCols=["color", "n"], outputCols=["ci", "ti"], handleInvalid="keep"),
            *encoders,
            ft.VectorAssembler(inputCols=["co1", "x", "to0"], outputCol="v", handleInvalid="keep"),
        ]
    ).fit(train.na.drop(subset=["color", "n"]))
    # StringIndexer(keep) declares numLabels + 1 values in its column metadata, so the encoder's
    # category sizes include the "unseen" index and even handleInvalid='error' accepts it
    assert_parity(pipe, train.union(nasty), tmp_path)


def test_one_hot_encoder_raw_numeric_indices(spark, tmp_path):
    """Fractional indices are truncated; negative and too-large indices are invalid; null -> null vector."""
    ft = _ft()
    fit_df = spark.createDataFrame([(0.0,), (1.0,), (2.0,)], "a double")
    m = ft.OneHotEncoder(inputCol="a", outputCol="o", handleInvalid="keep").fit(fit_df)
    test = spark.createDataFrame([(0.0,), (1.5,), (-1.0,), (7.0,), (None,), (2.0,)], "a double")
    assert_parity(m, test, tmp_path)
    strict = m.copy().setHandleInvalid("error")
    assert_both_reject(
        strict, spark.createDataFrame([(1.0,), (3.0,)], "a double"), tmp_path / "hi", "instances[1].a"
    )
    assert_both_reject(
        strict, spark.createDataFrame([(-1.0,)], "a double"), tmp_path / "neg", "instances[0].a"
    )


def test_one_hot_encoder_wide_output_is_sparse(spark, tmp_path):
    import scipy.sparse as sp

    ft = _ft()
    fit_df = spark.createDataFrame([(float(i),) for i in range(700)], "a double")
    m = ft.OneHotEncoder(inputCol="a", outputCol="o", handleInvalid="keep").fit(fit_df)
    test = spark.createDataFrame([(3.0,), (699.0,), (800.0,), (None,)], "a double")
    compiled = assert_parity(m, test, tmp_path)
    frame = compiled.transform(compiled.frame_from_records([{"a": 3.0}]))
    assert sp.issparse(frame["o"])


# ----------------------------------------------------------------------------------- VectorAssembler
def test_vector_assembler_keep_mixes_scalars_and_vectors(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    pipe = Pipeline(
        stages=[
            ft.VectorAssembler(inputCols=["x", "y"], outputCol="xy", handleInvalid="keep"),
            ft.Tokenizer(inputCol="text", outputCol="tok"),
            ft.HashingTF(inputCol="tok", outputCol="tf", numFeatures=64),
            ft.VectorAssembler(inputCols=["xy", "n", "tf", "flag"], outputCol="all", handleInvalid="keep"),
        ]
    ).fit(train)
    assert_parity(pipe, train.union(nasty), tmp_path)


@pytest.mark.parametrize("invalid", ["error", "skip"])
def test_vector_assembler_rejects_null_and_nan(spark, train, tmp_path, invalid):
    ft = _ft()
    va = ft.VectorAssembler(inputCols=["x", "y"], outputCol="v", handleInvalid=invalid)
    assert_parity(va, train.na.drop(subset=["x"]), tmp_path)
    null_row = spark.createDataFrame([(1.0, 2.0), (2.0, None)], "x double, y double")
    assert_both_reject(va, null_row, tmp_path / "null", field="instances[1].y")
    nan_row = spark.createDataFrame([(NAN, 2.0)], "x double, y double")
    assert_both_reject(va, nan_row, tmp_path / "nan", field="instances[0].x")


# ------------------------------------------------------------------------------------------- scalers
def _assembled(ft, scaler, invalid: str = "keep"):
    from pyspark.ml import Pipeline

    return Pipeline(
        stages=[
            ft.Imputer(inputCols=["x", "n"], outputCols=["xi", "ni"]),
            ft.VectorAssembler(inputCols=["xi", "ni", "y", "const"], outputCol="v", handleInvalid=invalid),
            scaler,
        ]
    )


def test_standard_scaler_zero_variance(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline
    from pyspark.sql import functions as F

    ft = _ft()
    scaler = Pipeline(
        stages=[
            ft.StandardScaler(inputCol="v", outputCol=f"s{m}{s}", withMean=bool(m), withStd=bool(s))
            for m in (0, 1)
            for s in (0, 1)
        ]
    )
    tr = train.na.drop(subset=["y"]).withColumn("const", F.lit(3.0))
    te = (
        train.union(nasty)
        .na.drop(subset=["y"])
        .withColumn("const", F.when(F.col("n") > 40, 7.0).otherwise(3.0))
    )
    assert_parity(_assembled(ft, scaler).fit(tr), te, tmp_path)


def test_standard_scaler_on_sparse_input(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    pipe = Pipeline(
        stages=[
            ft.Tokenizer(inputCol="text", outputCol="tok"),
            ft.HashingTF(inputCol="tok", outputCol="tf", numFeatures=1024),
            ft.StandardScaler(inputCol="tf", outputCol="s"),
            ft.MaxAbsScaler(inputCol="tf", outputCol="m"),
        ]
    ).fit(train)
    assert_parity(pipe, train.union(nasty), tmp_path)


def test_min_max_scaler_constant_and_out_of_range(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline
    from pyspark.sql import functions as F

    ft = _ft()
    scaler = Pipeline(
        stages=[
            ft.MinMaxScaler(inputCol="v", outputCol="s01"),
            ft.MinMaxScaler(inputCol="v", outputCol="s15", min=-1.0, max=5.0),
        ]
    )
    tr = train.na.drop(subset=["y"]).withColumn("const", F.lit(3.0))
    te = train.union(nasty).withColumn("const", F.when(F.col("n") > 40, 7.0).otherwise(3.0))
    assert_parity(_assembled(ft, scaler).fit(tr), te, tmp_path)


def test_max_abs_scaler_zero_column(spark, train, nasty, tmp_path):
    from pyspark.sql import functions as F

    ft = _ft()
    scaler = ft.MaxAbsScaler(inputCol="v", outputCol="s")
    tr = train.withColumn("const", F.lit(0.0))
    te = train.union(nasty).withColumn("const", F.when(F.col("n") > 40, -2.0).otherwise(0.0))
    assert_parity(_assembled(ft, scaler).fit(tr), te, tmp_path)


# ---------------------------------------------------------------------------------------------- text
def test_tokenizer_stopwords_hashing_idf(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    pipe = Pipeline(
        stages=[
            ft.Tokenizer(inputCol="text", outputCol="tok"),
            ft.StopWordsRemover(inputCol="tok", outputCol="sw"),
            ft.HashingTF(inputCol="sw", outputCol="tf", numFeatures=1 << 18),
            ft.HashingTF(inputCol="tok", outputCol="tfb", numFeatures=37, binary=True),
            ft.IDF(inputCol="tf", outputCol="idf", minDocFreq=2),
            ft.NGram(inputCol="tok", outputCol="ng", n=2),
            ft.CountVectorizer(inputCol="tok", outputCol="cv", minTF=1.0, minDF=1.0),
        ]
    ).fit(train)
    assert_parity(pipe, train.union(nasty), tmp_path)


def test_regex_tokenizer(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    settings = [
        ("\\s+", True, 1, True),
        ("\\w+", False, 2, False),
        ("[,;!\\s]", True, 0, True),
        ("(?i)[a-z]+", False, 3, True),
    ]
    stages = [
        ft.RegexTokenizer(
            inputCol="text", outputCol=f"tok{i}", pattern=p, gaps=g, minTokenLength=m, toLowercase=low
        )
        for i, (p, g, m, low) in enumerate(settings)
    ]
    assert_parity(Pipeline(stages=stages).fit(train), train.union(nasty), tmp_path)


def test_stop_words_remover_case_and_locale(spark, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    df = spark.createDataFrame(
        [(["The", "the", "I", "\u0130", "\u0131", "i", "Ayşe", "AND", "x"],), ([],), (["", "Is"],)],
        "tok array<string>",
    )
    stages = []
    for i, (case_sensitive, locale) in enumerate([(True, "en"), (False, "en"), (False, "tr")]):
        stages.append(
            ft.StopWordsRemover(
                inputCol="tok",
                outputCol=f"o{i}",
                caseSensitive=case_sensitive,
                locale=locale,
                stopWords=["the", "i", "\u0131", "and", "is", ""],
            )
        )
        stages.append(
            ft.StopWordsRemover(
                inputCol="tok", outputCol=f"d{i}", caseSensitive=case_sensitive, locale=locale
            )
        )
    assert_parity(Pipeline(stages=stages).fit(df), df, tmp_path)


def test_tokenizer_null_text_rejected(spark, tmp_path):
    ft = _ft()
    df = spark.createDataFrame([("ok",), (None,)], "text string")
    assert_both_reject(ft.Tokenizer(inputCol="text", outputCol="t"), df, tmp_path, field="instances[1].text")


def _signed(x: int) -> int:
    return x - (1 << 32) if x & 0x80000000 else x


@pytest.mark.parametrize(
    ("data", "seed", "expected"),
    [
        (b"", 0, 0),
        (b"", 1, 0x514E28B7),
        (b"", 0xFFFFFFFF, 0x81F16F39),
        (b"\xff\xff\xff\xff", 0, 0x76293B50),
        (b"\x21\x43\x65\x87", 0, 0xF55B516B),
        (b"\x21\x43\x65\x87", 0x5082EDEE, 0x2362F9DE),
        (b"\x21\x43\x65", 0, 0x7E4A8634),
        (b"\x21\x43", 0, 0xA0F7B07A),
        (b"\x21", 0, 0x72661CF4),
        (b"Hello, world!", 1234, 0xFAF6CDB3),
        (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
    ],
)
def test_murmur3_reference_vectors(data, seed, expected):
    """Published MurmurHash3 x86_32 vectors (HashingTF parity below checks Spark's seed-42 use)."""
    assert murmur3_bytes(data, seed) == _signed(expected)
    assert spark_hash(data.decode("latin-1")) == murmur3_bytes(data.decode("latin-1").encode(), 42)


def test_feature_hasher(spark, train, nasty_nulls, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    stages = [
        ft.FeatureHasher(
            inputCols=["x", "n", "color", "flag", "y"], outputCol=f"h{i}", numFeatures=n, categoricalCols=cats
        )
        for i, (n, cats) in enumerate([(64, []), (1 << 18, ["n", "x"])])
    ]
    assert_parity(Pipeline(stages=stages).fit(train), train.union(nasty_nulls), tmp_path)


# ---------------------------------------------------------------------------------------- Bucketizer
def test_bucketizer_and_quantile_discretizer(spark, train, nasty_nulls, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    inf = float("inf")
    pipe = Pipeline(
        stages=[
            ft.Bucketizer(
                inputCols=["x", "y"],
                outputCols=["xb", "yb"],
                splitsArray=[[-inf, 0.0, 2.0, 5.0, inf], [-inf, -0.5, 0.0, 3.5, inf]],
                handleInvalid="keep",
            ),
            ft.QuantileDiscretizer(inputCol="n", outputCol="nq", numBuckets=3, handleInvalid="keep"),
        ]
    ).fit(train)
    # Spark gives null for a null input but an extra bucket for NaN; frames treat NaN as null
    assert_parity(pipe, train.union(nasty_nulls), tmp_path)


def test_bucketizer_bounds_edges_and_errors(spark, tmp_path):
    ft = _ft()
    b = ft.Bucketizer(inputCol="a", outputCol="o", splits=[0.0, 1.0, 2.0, 10.0])
    edges = spark.createDataFrame([(0.0,), (1.0,), (1.5,), (2.0,), (10.0,), (9.999,), (None,)], "a double")
    assert_parity(b, edges, tmp_path)
    assert_both_reject(
        b, spark.createDataFrame([(5.0,), (10.5,)], "a double"), tmp_path / "oob", "instances[1].a"
    )
    assert_both_reject(b, spark.createDataFrame([(-0.5,)], "a double"), tmp_path / "low", "instances[0].a")


# ------------------------------------------------------------------------------------- IndexToString
def test_index_to_string(spark, train, tmp_path):
    from pyspark.ml import Pipeline

    ft = _ft()
    si = ft.StringIndexer(inputCol="color", outputCol="ci", handleInvalid="skip").fit(
        train.na.drop(subset=["color"])
    )
    pipe = Pipeline(stages=[ft.IndexToString(inputCol="idx", outputCol="lab", labels=si.labels)])
    test = spark.createDataFrame([(0.0,), (2.0,), (1.0,), (1.9,)], "idx double")
    assert_parity(pipe.fit(test), test, tmp_path)
    bad = spark.createDataFrame([(7.0,)], "idx double")
    assert_both_reject(pipe.fit(test), bad, tmp_path / "bad", field="instances[0].idx")
    null = spark.createDataFrame([(1.0,), (None,)], "idx double")
    assert_both_reject(pipe.fit(test), null, tmp_path / "null", field="instances[1].idx")


# ------------------------------------------------------------------------------------ vector stages
def test_vector_stages(spark, train, nasty, tmp_path):
    from pyspark.ml import Pipeline
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import functions as F

    ft = _ft()
    tr = train.na.drop().withColumn("const", F.lit(1.0))
    te = train.union(nasty).na.drop(subset=["x", "n", "y"]).withColumn("const", F.lit(1.0))
    pipe = Pipeline(
        stages=[
            ft.VectorAssembler(inputCols=["x", "n", "y", "const", "label"], outputCol="v"),
            ft.VectorSlicer(inputCol="v", outputCol="sl", indices=[4, 0, 2]),
            ft.Normalizer(inputCol="v", outputCol="n2", p=2.0),
            ft.Normalizer(inputCol="v", outputCol="n1", p=1.0),
            ft.Normalizer(inputCol="v", outputCol="ninf", p=float("inf")),
            ft.Normalizer(inputCol="v", outputCol="n3", p=3.0),
            ft.PolynomialExpansion(inputCol="sl", outputCol="poly", degree=3),
            ft.ElementwiseProduct(
                inputCol="v", outputCol="ep", scalingVec=Vectors.dense([1.0, 0.5, -2.0, 0.0, 3.0])
            ),
            ft.Binarizer(inputCol="v", outputCol="bin", threshold=2.0),
            ft.Binarizer(inputCol="x", outputCol="xbin", threshold=2.0),
            ft.PCA(inputCol="v", outputCol="pca", k=2),
            ft.VarianceThresholdSelector(featuresCol="v", outputCol="vts", varianceThreshold=0.5),
            ft.UnivariateFeatureSelector(
                featuresCol="v", outputCol="ufs", labelCol="label", selectionMode="numTopFeatures"
            )
            .setFeatureType("continuous")
            .setLabelType("categorical")
            .setSelectionThreshold(2),
            ft.ChiSqSelector(featuresCol="sl", outputCol="chi", labelCol="label", numTopFeatures=1),
        ]
    ).fit(tr)
    zero = spark.createDataFrame(
        [(0.0, 0, 0.0, True, 0.0)], "x double, n int, y double, flag boolean, label double"
    )
    assert_parity(pipe, te.select("x", "n", "y", "label", "const"), tmp_path, atol=1e-8)
    assert_parity(pipe, zero.withColumn("const", F.lit(0.0)).drop("flag"), tmp_path / "zero")


# ------------------------------------------------------------------------------------ TargetEncoder
@pytest.mark.parametrize(("target", "smoothing"), [("binary", 2.5), ("continuous", 1.0)])
def test_target_encoder(spark, train, tmp_path, target, smoothing):
    from pyspark.ml import Pipeline

    ft = _ft()
    label = "label" if target == "binary" else "y"
    pipe = Pipeline(
        stages=[
            ft.StringIndexer(inputCols=["color", "text"], outputCols=["ci", "ti"], handleInvalid="keep"),
            ft.TargetEncoder(
                inputCols=["ci", "ti"],
                outputCols=["ce", "te"],
                labelCol=label,
                targetType=target,
                smoothing=smoothing,
                handleInvalid="keep",
            ),
        ]
    ).fit(train)
    assert_parity(pipe, train, tmp_path)
    # unseen index under keep -> global value
    unseen = spark.createDataFrame([(9.0, 0.0), (0.0, 42.0)], "ci double, ti double")
    enc = pipe.stages[1]
    assert_parity(enc, unseen, tmp_path / "unseen")
    assert_both_reject(
        enc.copy().setHandleInvalid("error"), unseen, tmp_path / "err", field="instances[0].ci"
    )


def test_target_encoder_null_category(spark, tmp_path):
    """Spark 4.3 keeps nulls seen in training as their own category; unseen nulls get the global value."""
    ft = _ft()
    with_null = spark.createDataFrame(
        [(0.0, 1.0), (1.0, 0.0), (0.0, 1.0), (None, 1.0), (2.0, 0.0)], "c double, y double"
    )
    test = spark.createDataFrame([(None, 1.0), (5.0, 1.0), (0.0, 0.0), (2.0, 1.0)], "c double, y double")
    seen = ft.TargetEncoder(
        inputCols=["c"], outputCols=["e"], labelCol="y", handleInvalid="keep", smoothing=1.0
    )
    assert_parity(seen.fit(with_null), test, tmp_path)
    unseen = seen.copy().fit(with_null.na.drop())
    assert_parity(unseen, test, tmp_path / "unseen")
    strict = unseen.copy().setHandleInvalid("error")
    assert_both_reject(strict, test.limit(1), tmp_path / "err", field="instances[0].c")


def test_input_error_is_scoring_error():
    from sparkpipe.errors import ScoringError

    e = InputError.at("age", 3, "expected double, got 'x'", "double")
    assert isinstance(e, ScoringError)
    assert e.field == "instances[3].age" and e.column == "age" and e.row == 3
    assert "instances[3].age" in str(e) and "double" in str(e)
