"""Recommender serving end to end, on the MovieLens sample: the README's ALS lines as written.

One module fixture runs the README's ``sparkpipe run`` line (the ALS example with implicit feedback)
in a temporary directory holding ``config/examples/als.yaml``, then starts the README's
``sparkpipe serve`` line there (on a free port, stopped at the end). The tests check:

* parity: the NumPy top-k lists without seen-item exclusion are Spark's ``recommendForUserSubset``
  lists (same items, same order, scores within 1e-9 relative) for every user;
* the seen-items index is the training split's (user, item) pairs, recomputed here from the split;
* served recommendations leave out exactly the training items and are otherwise Spark's order;
* ``/similar`` is cosine similarity of Spark's item factors; cold start (popular / none / error);
  field-named 4xx for bad input, an unknown model and a model that is not a recommender;
* unknown users or items in ``/predict`` pair scoring are flagged with a reason;
* every README curl example that names ``movielens_als`` runs against the server as written;
* the README's ``sparkpipe recommend`` lines (one user as JSON, all users to parquet);
* many concurrent clients over real HTTP: no errors, and every answer the expected one.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sparkpipe.cli import main

from .conftest import serve_process
from .test_readme_examples import _argv, _call, _curl, _free_port, readme_commands

pytestmark = [pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "movielens_als"
RUN_LINE = "sparkpipe run --config config/examples/als.yaml --set model.hyperparameters.implicitPrefs=true --set model.hyperparameters.alpha=10"
SERVE_LINE = "sparkpipe serve --config config/examples/als.yaml --port 8000"
USER_LINE = "sparkpipe recommend --model models:/movielens_als@champion --user 1 -k 10"
ALL_USERS_LINE = "sparkpipe recommend --model models:/movielens_als@champion --all-users --output output/recs --format parquet"


@pytest.fixture(scope="module")
def als(spark, tmp_path_factory):
    """The README's ALS run and server: root dir, port, the served model's directory, Spark's model."""
    from pyspark.ml import PipelineModel

    from sparkpipe.config import MlflowConfig
    from sparkpipe.tracking import local_model_dir

    root = tmp_path_factory.mktemp("recommend")
    (root / "config" / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "examples" / "als.yaml", root / "config" / "examples" / "als.yaml")
    assert RUN_LINE in [" ".join(_argv(c)) for c in readme_commands()], "README lost the ALS run line"
    saved_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    old = Path.cwd()
    os.chdir(root)
    try:
        main(_argv(RUN_LINE)[1:])
    finally:
        os.chdir(old)
        if saved_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved_uri
    mlflow_cfg = MlflowConfig(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    path = local_model_dir(f"models:/{MODEL}@champion", mlflow_cfg, cache_dir=root / "cache")
    spark_model = PipelineModel.load(str(path / "sparkml"))
    port = _free_port()
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    env.pop("MLFLOW_TRACKING_URI", None)
    with serve_process([*_argv(SERVE_LINE)[1:-1], str(port)], port, root, env):
        yield {"root": root, "port": port, "path": path, "spark_model": spark_model, "mlflow": mlflow_cfg}


@pytest.fixture(scope="module")
def recommender(als):
    from sparkpipe.scoring import compile_pipeline
    from sparkpipe.scoring.recommend import Recommender

    return Recommender.from_model_dir(compile_pipeline(als["path"]), als["path"])


def _spark_lists(spark, model, users, k):
    als_stage = model.stages[-1]
    subset = spark.createDataFrame([(int(u),) for u in users], [als_stage.getUserCol()])
    return {
        r[0]: ([x[0] for x in r[1]], np.array([x[1] for x in r[1]], dtype=np.float64))
        for r in als_stage.recommendForUserSubset(subset, k).collect()
    }


def _assert_scores(got, want):
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= 1e-9 * np.maximum(1.0, np.abs(want))), np.max(np.abs(got - want))


# ------------------------------------------------------------------------------------------- parity
def test_implicit_prefs_reached_the_model(als):
    stage = als["spark_model"].stages[-1]
    assert type(stage).__name__ == "ALSModel"
    run = json.loads((als["root"] / "output" / "movielens" / "run.json").read_text())
    assert run["algorithm"] == "als"
    # the default recommendation metrics: MAP@k and recall@k beside precision@k and NDCG@k
    for m in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"):
        assert 0.0 <= run["metrics"][f"test_{m}"] <= 1.0, run["metrics"]
    # the estimator's hyperparameters as the run logged them (a fitted ALSModel does not keep them)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{als['root'] / 'mlflow.db'}")
    params = client.get_run(run["run_id"]).data.params
    assert params["model.hyperparameters.implicitPrefs"] == "True", params
    assert float(params["model.hyperparameters.alpha"]) == 10.0


def test_top_k_without_exclusion_is_spark_recommend_for_user_subset(spark, als, recommender):
    twin = recommender.twin
    users = twin.user_ids.tolist()
    k = 15
    want = _spark_lists(spark, als["spark_model"], users, k)
    assert sorted(want) == users
    for u in users:
        ids, scores = twin.recommend_for_user(u, k)
        assert ids.tolist() == want[u][0], u
        _assert_scores(scores, want[u][1])
        answer = recommender.recommend(u, k, exclude_seen=False)
        assert answer.items == want[u][0] and not answer.cold_start
        _assert_scores(answer.scores, want[u][1])


def test_seen_index_is_the_training_split(spark, als, recommender):
    from sparkpipe.config import load_config
    from sparkpipe.flow.prepare import prepare_data

    cfg = load_config(als["root"] / "config" / "examples" / "als.yaml")
    data = prepare_data(spark, cfg)
    try:
        train = {(int(r[0]), int(r[1])) for r in data.train.select("userId", "movieId").collect()}
    finally:
        data.release()
    index = recommender.index
    assert index is not None and index.cold_start == "popular"
    got = set(zip(index.seen_users.tolist(), index.seen_items.tolist(), strict=True))
    assert got == train
    # popularity: training ratings per item, most first (ties: smaller id first)
    counts: dict[int, int] = {}
    for _, i in train:
        counts[i] = counts.get(i, 0) + 1
    want = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert list(zip(index.popular.tolist(), index.popular_counts.tolist(), strict=True)) == want


def test_served_recommendations_exclude_training_items_otherwise_spark_order(spark, als, recommender):
    index = recommender.index
    n_items = recommender.n_items
    users = recommender.twin.user_ids.tolist()[:12]
    full = _spark_lists(spark, als["spark_model"], users, n_items)
    for u in users:
        seen = set(index.seen(u).tolist())
        assert seen, u
        expected = [i for i in full[u][0] if i not in seen][:10]
        status, body = _call(als["port"], "GET", f"/recommend/{MODEL}?user={u}&k=10")
        assert status == 200, body
        assert [x["item"] for x in body["items"]] == expected
        assert body["cold_start"] is False and body["seen_excluded"] is True
        assert not seen & {x["item"] for x in body["items"]}
        pos = {i: j for j, i in enumerate(full[u][0])}
        _assert_scores([x["score"] for x in body["items"]], full[u][1][[pos[i] for i in expected]])
    # Spark semantics on request, through every model reference form
    u = users[0]
    for ref in (MODEL, f"{MODEL}@champion", f"{MODEL}/1"):
        status, body = _call(als["port"], "GET", f"/recommend/{ref}?user={u}&k=5&exclude_seen=false")
        assert status == 200 and [x["item"] for x in body["items"]] == full[u][0][:5], (ref, body)
    # many users at once
    status, body = _call(als["port"], "POST", f"/recommend/{MODEL}", {"users": [*users[:3], 99999], "k": 4})
    assert status == 200, body
    recs = body["recommendations"]
    assert [r["user"] for r in recs] == [*users[:3], 99999]
    for r in recs[:3]:
        assert [x["item"] for x in r["items"]] == recommender.recommend(r["user"], 4).items
    assert recs[3]["cold_start"] is True


def test_similar_items_are_factor_cosine(als, recommender):
    stage = als["spark_model"].stages[-1]
    factors = {r["id"]: np.array(r["features"], dtype=np.float64) for r in stage.itemFactors.collect()}
    item = sorted(factors)[3]
    v = factors[item] / np.linalg.norm(factors[item])
    sims = {i: float(f @ v / np.linalg.norm(f)) for i, f in factors.items() if i != item}
    want = sorted(sims, key=lambda i: (-sims[i], -i))[:7]
    status, body = _call(als["port"], "GET", f"/similar/{MODEL}?item={item}&k=7")
    assert status == 200, body
    assert [x["item"] for x in body["items"]] == want and item not in want
    assert np.allclose(
        [x["similarity"] for x in body["items"]], [sims[i] for i in want], rtol=1e-9, atol=1e-12
    )
    status, body = _call(als["port"], "GET", f"/similar/{MODEL}?item=123456&k=3")
    assert status == 404 and body["errors"][0]["field"] == "item", body


def test_cold_start_policies(als, recommender):
    status, body = _call(als["port"], "GET", f"/recommend/{MODEL}?user=99999&k=5")
    assert status == 200, body
    assert body["cold_start"] is True and "unknown user" in body["reason"]
    assert [x["item"] for x in body["items"]] == recommender.index.popular[:5].tolist()
    assert [x["popularity"] for x in body["items"]] == recommender.index.popular_counts[:5].tolist()
    from sparkpipe.scoring.recommend import UnknownIdError

    recommender.cold_start = "none"
    try:
        answer = recommender.recommend(99999, 5)
        assert answer.items == [] and answer.cold_start
        recommender.cold_start = "error"
        with pytest.raises(UnknownIdError, match="unknown user"):
            recommender.recommend(99999, 5)
    finally:
        recommender.cold_start = "popular"


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        (f"/recommend/{MODEL}?user=1&k=0", 422, "k"),
        (f"/recommend/{MODEL}?user=1&k=1001", 422, "k"),
        (f"/recommend/{MODEL}?user=1&k=ten", 422, "k"),
        (f"/recommend/{MODEL}?user=1.5", 422, "user"),
        (f"/recommend/{MODEL}?k=3", 422, "user"),
        ("/recommend/no_such_model?user=1", 404, "model_id"),
        (f"/similar/{MODEL}?item=x", 422, "item"),
    ],
)
def test_bad_requests_name_the_field(als, path, status, field):
    got, body = _call(als["port"], "GET", path)
    assert got == status, body
    assert body["errors"][0]["field"] == field, body


def test_bad_post_bodies_name_the_field(als):
    for payload, field in (
        ({"users": []}, "users"),
        ({"users": [1], "k": 0}, "k"),
        ({"users": [1], "top": 3}, "top"),
        ({"users": [[1]]}, "users[0]"),
        ({"users": list(range(1001))}, "users"),
    ):
        status, body = _call(als["port"], "POST", f"/recommend/{MODEL}", payload)
        assert status == 422 and body["errors"][0]["field"] == field, (payload, body)


def test_non_recommender_model_is_a_clear_400(client):
    # the serving suite's logistic regression (conftest `registered`), served in process
    res = client.get("/recommend/churn_lr?user=1")
    assert res.status_code == 400, res.text
    body = res.json()
    assert "not a recommender" in body["detail"] and body["errors"][0]["field"] == "model", body


def test_pair_scoring_flags_unknown_users_and_items(als, recommender):
    u = recommender.twin.user_ids.tolist()[0]
    i = recommender.twin.item_ids.tolist()[0]
    rows = [{"userId": u, "movieId": i}, {"userId": u, "movieId": 99999}, {"userId": 88888, "movieId": 99999}]
    status, body = _call(als["port"], "POST", "/predict", {"model_id": MODEL, "instances": rows})
    assert status == 200, body
    known, item_cold, both = body["predictions"]
    assert known["prediction"] is not None and "cold_start" not in known
    want = float(recommender.twin.item_scores(0)[0])
    assert known["prediction"] == pytest.approx(want, rel=1e-9)
    assert item_cold["prediction"] is None and item_cold["cold_start"] is True
    assert item_cold["reason"].startswith("unknown item 99999")
    assert both["cold_start"] is True and "unknown user 88888 and unknown item 99999" in both["reason"]


# ----------------------------------------------------------------------------------- README examples
def test_readme_recommend_curl_examples(als, recommender):
    """The README's curl examples of the ALS model, as written (against this server)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    commands = [c for c in readme_commands() if c.startswith("curl") and MODEL in c]
    assert len(commands) >= 4, commands
    for command in commands:
        answer = _curl(command, als["port"], env)
        if "/recommend/" in command and "-d" in command:
            assert all(r["items"] for r in answer["recommendations"]), answer
        elif "/recommend/" in command:
            assert answer["items"] and answer["model"] == MODEL, answer
            assert (
                answer["items"]
                and [x["item"] for x in answer["items"]]
                == recommender.recommend(answer["user"], answer["k"]).items
            )
        elif "/similar/" in command:
            assert len(answer["items"]) == answer["k"], answer
        elif "/predict" in command:
            assert answer["predictions"][0]["cold_start"] is True, answer


def test_readme_recommend_cli_lines(als, capsys, recommender):
    import pyarrow.parquet as pq

    old = Path.cwd()
    os.chdir(als["root"])
    saved_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        capsys.readouterr()
        main(_argv(USER_LINE)[1:])
        answer = json.loads(capsys.readouterr().out)
        main(_argv(ALL_USERS_LINE)[1:])
        out = capsys.readouterr().out
    finally:
        os.chdir(old)
        if saved_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved_uri
    assert answer["user"] == 1 and [x["item"] for x in answer["items"]] == recommender.recommend(1, 10).items
    assert "recommended 10 items" in out, out
    table = pq.read_table(als["root"] / "output" / "recs").to_pylist()
    by_user: dict[int, list[int]] = {}
    for row in table:
        by_user.setdefault(row["user"], []).append(row["item"])
        assert row["item"] not in set(recommender.index.seen(row["user"]).tolist())
    assert sorted(by_user) == recommender.twin.user_ids.tolist()
    for u in list(by_user)[:5]:
        assert by_user[u] == recommender.recommend(u, 10).items
    # the same table as Delta (delta-rs), Spark's lists with --include-seen
    from deltalake import DeltaTable

    from sparkpipe.flow.recommend_batch import recommend_all_users

    out_path = str(als["root"] / "output" / "recs_delta")
    res = recommend_all_users(str(als["path"]), out_path, 3, "delta", als["mlflow"], exclude_seen=False)
    rows = DeltaTable(out_path).to_pyarrow_table().to_pylist()
    assert res["rows"] == len(rows) == 3 * recommender.n_users
    u = rows[0]["user"]
    got = [r["item"] for r in sorted((r for r in rows if r["user"] == u), key=lambda r: r["rank"])]
    assert got == recommender.twin.recommend_for_user(u, 3)[0].tolist()


# ---------------------------------------------------------------------------------------- concurrency
def test_concurrent_clients_get_no_errors_and_the_right_answers(als, recommender):
    """32 clients, each on its own keep-alive connection, 50 requests each, over real HTTP."""
    users = recommender.twin.user_ids.tolist()
    expected = {u: recommender.recommend(u, 10).items for u in users}

    def client(c: int) -> list[str]:
        problems = []
        conn = http.client.HTTPConnection("127.0.0.1", als["port"], timeout=60)
        try:
            for j in range(50):
                u = users[(c * 50 + j) % len(users)]
                conn.request("GET", f"/recommend/{MODEL}?user={u}&k=10")
                res = conn.getresponse()
                body = res.read()
                if res.status != 200:
                    problems.append(f"{u}: {res.status} {body[:200]!r}")
                elif [x["item"] for x in json.loads(body)["items"]] != expected[u]:
                    problems.append(f"{u}: wrong items")
        finally:
            conn.close()
        return problems

    with ThreadPoolExecutor(32) as pool:
        problems = [p for ps in pool.map(client, range(32)) for p in ps]
    assert problems == []


# ------------------------------------------------------------------------------------- string ids
def test_string_ids_go_through_the_pipelines_indexer(spark, tmp_path):
    """String user and item ids: the pipeline's StringIndexer maps them to ALS ids; the index, the
    answers and the exclusion work in the client's ids (the twin's lists, Spark's by the parity test)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.recommendation import ALS

    from sparkpipe.flow.recommend_index import write_recommend_index
    from sparkpipe.scoring import compile_pipeline
    from sparkpipe.scoring.recommend import Recommender

    rng = np.random.default_rng(11)
    pairs = {
        (f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, 12, 120), rng.integers(0, 9, 120), strict=True)
    }
    df = spark.createDataFrame(
        [(u, i, float(1 + (len(u) * 7 + int(i[1:])) % 5)) for u, i in sorted(pairs)],
        "user string, item string, rating double",
    ).coalesce(1)
    model = Pipeline(
        stages=[
            StringIndexer(
                inputCols=["user", "item"], outputCols=["user__idx", "item__idx"], handleInvalid="keep"
            ),
            ALS(
                userCol="user__idx",
                itemCol="item__idx",
                ratingCol="rating",
                rank=3,
                maxIter=4,
                seed=1,
                numUserBlocks=1,  # one task per stage: tiny data
                numItemBlocks=1,
            ),
        ]
    ).fit(df)
    path = tmp_path / "model"
    model.write().overwrite().save(str(path))
    write_recommend_index(model, df, path, "popular")
    plan = compile_pipeline(path, input_schema=[("user", "string"), ("item", "string")])
    rec = Recommender.from_model_dir(plan, path)
    assert (rec.user_col, rec.item_col) == ("user", "item")
    indexer = model.stages[0]
    users_idx = {lab: i for i, lab in enumerate(indexer.labelsArray[0])}
    items = indexer.labelsArray[1]
    for user, uid in users_idx.items():
        # the twin's integer lists are Spark's (test_top_k_without_exclusion_is_...): here in labels
        full = [items[i] for i in rec.twin.recommend_for_user(uid, len(items))[0]]
        assert rec.recommend(user, 4, exclude_seen=False).items == full[:4]
        seen = {i for u, i in pairs if u == user}
        assert seen and rec.recommend(user, 4).items == [i for i in full if i not in seen][:4]
    assert sorted(rec.raw_users()) == sorted(users_idx)
    cold = rec.recommend("nobody", 3)
    assert cold.cold_start and all(isinstance(i, str) for i in cold.items)
    reasons = rec.pair_reasons(["u1", "nobody"], ["i1", "nothing"])
    assert reasons[0] is None and reasons[1].startswith("unknown user 'nobody' and unknown item 'nothing'")
