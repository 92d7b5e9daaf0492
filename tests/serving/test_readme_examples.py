"""The README's examples, as written, against a real ``sparkpipe serve`` after a real pipeline run.

The fenced ``bash`` blocks of README.md are parsed: every ``curl`` command is run with the real curl
against the server process (``localhost:8000`` becomes the test's port, ``<id>`` the job id the
``/train`` example answered, and ``--fail-with-body`` makes an HTTP error fail the command), and every
``sparkpipe`` command of the README runs as written: here (in process, the console script's own
``main``, in order, so ``models promote churn_model 3`` finds the version the lines before it
registered), or in the test named in :data:`RUN_ELSEWHERE`, which runs that very line. A command
added to the README without a test fails here. The only edits to a line are listed, and checked, in
:data:`SUBSTITUTED`. The Python ``compile_pipeline`` snippet is executed too.

The working directory holds ``config/pipeline_config.yaml`` (a 1,500-row stand-in for the project's
file, report off, small trees for ``compare``, the server's data root and job directory set),
``data/customers.csv`` and ``data/new.parquet`` the examples name. One trained model (the fixture's
``sparkpipe run``), one server process (the Quick start's ``serve`` line, which is the CLI block's
``serve`` line on another port), stopped at the end.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from sparkpipe.cli import main

from .conftest import serve_process

pytestmark = [pytest.mark.spark, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"
ROOT = README.parents[0]
RUN_ELSEWHERE = {
    "sparkpipe cluster start --workers 2 --cores 1 --memory 2g": "tests/cluster/test_standalone_cluster.py",
    "sparkpipe run --config config/examples/cluster.yaml": "tests/cluster/test_standalone_cluster.py",
    "sparkpipe cluster status": "tests/cluster/test_standalone_cluster.py",
    "sparkpipe cluster stop": "tests/cluster/test_standalone_cluster.py",
    # the ALS example: its own run, server and model (movielens_als)
    "sparkpipe run --config config/examples/als.yaml --set model.hyperparameters.implicitPrefs=true "
    "--set model.hyperparameters.alpha=10": "tests/serving/test_recommend.py",
    "sparkpipe serve --config config/examples/als.yaml --port 8000": "tests/serving/test_recommend.py",
    "sparkpipe recommend --model models:/movielens_als@champion --user 1 -k 10": "tests/serving/test_recommend.py",
    "sparkpipe recommend --model models:/movielens_als@champion --all-users --output output/recs --format parquet": (
        "tests/serving/test_recommend.py"
    ),
}
RECOMMEND_MODEL = "movielens_als"
"""README curl examples naming this model run against the ALS server of tests/serving/test_recommend.py."""
"""README lines (comment stripped) that need a running cluster, each with the test that runs it as
written (that file names the line; :func:`test_every_readme_cli_line_runs_somewhere` checks it)."""
SUBSTITUTED = {
    # 50,000 rows would be the slowest step of the suite; the command, the config and the algorithm
    # are the README's
    "sparkpipe run --config config/pipeline_config.yaml --set model.algorithm=random_forest --set data.rows=50000": (
        "data.rows=50000",
        "data.rows=1500",
    ),
}
"""README lines run here with one edit: ``line -> (old, new)``."""
FIXTURE_LINES = {
    "sparkpipe run --config config/pipeline_config.yaml",  # the fixture's training run
    "sparkpipe serve --config config/pipeline_config.yaml --port 8000",  # the fixture's server (port)
}


def readme_commands() -> list[str]:
    """Every shell command of the README's ``bash`` blocks (continuation lines and multi-line quoted
    bodies joined), as written."""
    text = README.read_text()
    out: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        pending = ""
        for line in block.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if pending.rstrip().endswith("\\"):
                continue
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # inside a quoted body spanning lines
                continue
            if pending.strip() and not pending.lstrip().startswith("#"):
                out.append(pending.strip())
            pending = ""
    return out


def _argv(command: str) -> list[str]:
    return shlex.split(command.replace("\\\n", " "), comments=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read().decode(), e.code
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


@pytest.fixture(scope="module")
def served(spark, tmp_path_factory):
    from sparkpipe.data.datasets import load_builtin

    root = tmp_path_factory.mktemp("readme")
    cfg = {
        "spark": {"app_name": "readme-examples", "master": "local[2]"},
        "data": {"input_path": "builtin:churn", "rows": 1500, "output_path": "output/churn"},
        "features": {"target": "churned"},
        # 20 iterations: the metric has settled; the default 100 is a Spark job each
        "model": {"algorithm": "logistic_regression", "hyperparameters": {"maxIter": 20}},
        "mlflow": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "experiment_name": "readme",
            "registered_model_name": "churn_model",
        },
        "evaluation": {"report": False},
        "compare": {
            "bootstrap_samples": 5,
            # small forests: the README's compare line trains three models, a leaderboard needs no more
            "hyperparameters": {
                "logistic_regression": {"maxIter": 20},
                "random_forest": {"numTrees": 5, "maxDepth": 4},
                "gbt": {"maxIter": 5, "maxDepth": 2},
            },
        },
        "logging": {"level": "WARNING"},
        "deployment": {
            "model_name": "churn_model",
            "allowed_data_roots": [str(root)],
            "jobs_dir": str(root / "jobs"),
            "reload_interval_seconds": 1,
        },
    }
    (root / "config").mkdir()
    cfg_path = root / "config" / "pipeline_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_line = next(c for c in readme_commands() if c.startswith("sparkpipe run"))
    assert run_line.split("#")[0].split() == ["sparkpipe", "run", "--config", "config/pipeline_config.yaml"]
    old = Path.cwd()
    os.chdir(root)
    try:
        main(_argv(run_line)[1:])  # the CLI block's first line, as written
    finally:
        os.chdir(old)
    # the data files the examples name, inside the allowed data root
    (root / "data").mkdir()
    data = load_builtin(spark, "churn", rows=1200, seed=3).drop("support_notes").toPandas()
    data.to_csv(root / "data" / "customers.csv", index=False)
    data.drop(columns=["churned"]).head(200).to_parquet(
        root / "data" / "new.parquet", coerce_timestamps="us", allow_truncated_timestamps=True
    )  # Spark reads microsecond timestamps, not pandas' nanoseconds
    (root / "my.yaml").write_text(cfg_path.read_text())
    port = _free_port()
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    env.pop("MLFLOW_TRACKING_URI", None)
    serve_line = next(c for c in readme_commands() if c.startswith(".venv/bin/sparkpipe serve"))
    serve_argv = _argv(serve_line.replace("&", ""))
    assert serve_argv[0].endswith("sparkpipe") and serve_argv[1] == "serve", serve_line
    # the CLI block's serve line is the same command on port 8000: this process runs both, on a free port
    cli_serve = next(c for c in readme_commands() if c.startswith("sparkpipe serve"))
    assert cli_serve in FIXTURE_LINES and _argv(cli_serve) == ["sparkpipe", *serve_argv[1:], "--port", "8000"]
    with serve_process([*serve_argv[1:], "--port", str(port)], port, root, env):
        yield {"port": port, "root": root}


def test_health(served):
    assert _call(served["port"], "GET", "/health")[0] == 200


def _example(port: int) -> tuple[list[str], dict]:
    """The served model's input column order and an example row, as GET /models/{name} reports them."""
    status, info = _call(port, "GET", "/models/churn_model")
    assert status == 200, info
    loaded = info["loaded"][0] if isinstance(info.get("loaded"), list) else info["loaded"]
    example = loaded["input_example"]
    names = [c["name"] if isinstance(c, dict) else c[0] for c in loaded["input_schema"]]
    row = example.get("features", example) if isinstance(example, dict) else example
    if isinstance(row, list):
        row = dict(zip(names, row, strict=True))
    return names, row


def test_predict_with_a_positional_feature_list(served):
    names, row = _example(served["port"])
    features = [row[n] for n in names]
    status, body = _call(
        served["port"], "POST", "/predict", {"model_id": "churn_model", "features": features}
    )
    assert status == 200, body
    assert body["model"] == "churn_model" and body["version"] == "1"
    pred = body["predictions"][0]
    assert pred["prediction"] in (0.0, 1.0) and abs(sum(pred["probability"]) - 1) < 1e-9
    # wrong length: a 4xx naming the field and the expected count
    status, err = _call(
        served["port"], "POST", "/predict", {"model_id": "churn_model", "features": [1.2, 3.4, 5.6]}
    )
    assert status == 422 and "features" in json.dumps(err)


def _curl(command: str, port: int, env: dict[str, str]) -> dict | str:
    """Run one README curl command against the test server; fail on an HTTP error."""
    cmd = command.replace("localhost:8000", f"127.0.0.1:{port}").replace(
        "curl -s", "curl -s --fail-with-body", 1
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, (
        f"{command}\n-> exit {done.returncode}: {done.stdout[-2000:]} {done.stderr[-500:]}"
    )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return done.stdout


def test_every_readme_curl_example(served):
    """Each curl example of the README as written, in order: Quick start (health, the model's schema,
    a /predict naming three of its columns), then the Prediction service examples (a positional row,
    /invocations with nulls and unseen categories, /train on data/customers.csv, its job, /metrics)."""
    port = served["port"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    commands = [c for c in readme_commands() if c.startswith("curl") and RECOMMEND_MODEL not in c]
    assert len(commands) >= 8, commands
    job_id = None
    for command in commands:
        if "<id>" in command:
            assert job_id, "the /train example must come before /jobs/<id>"
            command = command.replace("<id>", job_id)
        answer = _curl(command, port, env)
        if "/predict" in command and "-d" in command:
            assert answer["model"] == "churn_model" and answer["predictions"][0]["prediction"] in (0.0, 1.0)
            if '"tenure_months": 3' in command:  # three named columns: the others are imputed
                assert "signup_ts" in answer["imputed_columns"] and "plan" not in answer["imputed_columns"]
        elif "/invocations" in command:
            assert answer["predictions"][0] in (0.0, 1.0)
        elif "/train" in command:
            job_id = answer["id"]
        elif "/history" in command:
            assert answer["history"][0]["to"] == "1" and answer["history"][0]["actor"]
        elif "/ab/churn_model" in command and "PUT" not in command:
            assert set(answer["variants"]) == {"champion", "challenger"} and answer["recommendation"]
        elif "/feedback" in command:
            assert answer["joined"][0]["model"] == "churn_model"
        elif "/monitoring/churn_model/drift" in command:
            assert answer["window_rows"] > 0 and answer["features"] and "drift_share" in answer
        elif "/models/churn_model" in command:
            assert answer["loaded"][0]["input_schema"] and answer["aliases"]["champion"] == "1"
    assert job_id
    deadline = time.time() + 600
    while True:
        state = _curl(f"curl -s localhost:8000/jobs/{job_id}", port, env)
        if state["status"] in ("succeeded", "failed"):
            break
        assert time.time() < deadline, state
        time.sleep(2)
    assert state["status"] == "succeeded", state
    assert state["result"]["registered_version"] == "2" and state["result"]["metrics"]["test_auc_roc"] > 0.7
    # the promotion gate decided (same schema: on the test metric against the champion) and the server
    # follows its decision: it hot-swaps to a promoted version and keeps serving v1 otherwise
    gate = state["result"]["promotion"]
    assert gate["decision"] in ("champion", "challenger") and gate["champion_version"] == "1", gate
    # data/customers.csv is read from CSV (age inferred as double, int in the built-in set): a widened
    # number column is the same schema for clients, so the champion was scored on the same test rows
    assert gate["metric"] == "test_auc_roc" and gate["champion_value"] > 0.7, gate
    expected = "2" if gate["decision"] == "champion" else "1"
    _, row = _example(port)
    deadline = time.time() + 60
    while (
        _call(port, "POST", "/predict", {"model_id": "churn_model", "features": row})[1].get("version")
        != expected
    ):
        assert time.time() < deadline, f"the server does not serve v{expected} after the gate's {gate}"
        time.sleep(1)


def _commentless(command: str) -> str:
    return shlex.join(_argv(command))


def test_every_readme_cli_line_runs_somewhere():
    """Each ``sparkpipe`` line of the README is run here or by the test :data:`RUN_ELSEWHERE` names,
    which spells the line out; every substitution edits its line once."""
    cli = [_commentless(c) for c in readme_commands() if c.startswith("sparkpipe ")]
    assert set(cli) >= FIXTURE_LINES
    for line, test_file in RUN_ELSEWHERE.items():
        assert line in cli, f"README no longer has {line!r}"
        assert f'"{line}"' in (ROOT / test_file).read_text(), f"{test_file} does not run {line!r}"
    for line, (old, new) in SUBSTITUTED.items():
        assert line in cli and line.count(old) == 1 and old != new, line


CLI_HERE = [
    c
    for c in readme_commands()
    if c.startswith("sparkpipe ") and _commentless(c) not in FIXTURE_LINES | set(RUN_ELSEWHERE)
]
"""The CLI lines run here, in README order (one test each: ``models promote churn_model 3`` needs the
versions the lines before it registered)."""


def test_the_cli_lines_run_here_cover_every_command():
    assert {_argv(c)[1] for c in CLI_HERE} >= {
        "run", "train", "compare", "validate", "evaluate", "predict", "stream", "data", "models"
    }, CLI_HERE  # fmt: skip


@pytest.mark.parametrize("command", CLI_HERE, ids=[" ".join(_argv(c)[1:3]) for c in CLI_HERE])
def test_readme_cli_line(served, capsys, command):
    """One CLI line as written (or with its :data:`SUBSTITUTED` edit), in process (the console
    script's ``main``) in the example directory."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{served['root'] / 'mlflow.db'}")
    line = _commentless(command)
    if line in SUBSTITUTED:
        line = line.replace(*SUBSTITUTED[line])
    argv = _argv(line)[1:]
    # (name, version) of every registered version: `train` without --config registers under its
    # default name (<data>_<algorithm>), `run` and `compare` with the README's config as churn_model
    versions = {(v.name, str(v.version)) for v in client.search_model_versions()}
    old = Path.cwd()
    os.chdir(served["root"])
    try:
        main(argv)
    finally:
        os.chdir(old)
    out = capsys.readouterr().out
    if argv[0] in ("run", "train", "compare"):  # each registers one more version
        now = {(v.name, str(v.version)) for v in client.search_model_versions()}
        assert len(now - versions) == 1, (line, versions, now)
    if argv[0] == "compare":
        board = json.loads((served["root"] / "output" / "churn" / "compare.json").read_text())
        assert sorted(r["algorithm"] for r in board["leaderboard"]) == sorted(
            ["logistic_regression", "random_forest", "gbt"]
        )
    elif argv[0] == "predict":
        assert "scored 200 rows" in out, out
    elif argv[0] == "stream":  # every generated row, once, with the model's version
        rows = {"data/churn_csv": 20_000}[argv[argv.index("--source") + 1]]
        text = " ".join(out.split())  # the console wraps long lines
        assert f"streamed {rows} rows" in text and "model churn_model version" in text, out
    elif argv[:2] == ["models", "list"]:
        assert any("churn_model" in x and "champion" in x for x in out.splitlines()), out
    elif argv[:2] == ["models", "promote"]:
        assert str(client.get_model_version_by_alias("churn_model", "champion").version) == "3"
    elif argv[:2] == ["data", "generate"]:
        import pyarrow.parquet as pq

        assert pq.read_table(served["root"] / "data" / "churn100k").num_rows == 100_000
    elif argv[0] == "validate":
        assert "valid" in out
    elif argv[0] == "evaluate":
        assert "auc_roc" in out, out
    elif argv[0] == "monitor":
        drift_html = served["root"] / "drift.html"
        assert "report:" in out and drift_html.read_text().count("<img") >= 1, out


def test_readme_python_snippet(served):
    """The Prediction service section's ``compile_pipeline`` snippet, as written, in the example dir."""
    block = re.search(
        r"```python\n(from sparkpipe.scoring import compile_pipeline.*?)```", README.read_text(), re.S
    )
    assert block, "README lost the compile_pipeline snippet"
    code = block.group(1)
    namespace: dict = {}
    old = Path.cwd()
    os.chdir(served["root"])
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # the README's own code
    finally:
        os.chdir(old)
    plan = namespace["plan"]
    assert [n for n, _ in plan.input_schema][:1] == ["signup_ts"]
    pred = plan.predict([{name: None for name, _ in plan.input_schema}])
    assert pred[0]["prediction"] in (0.0, 1.0)


def test_metrics_in_prometheus_format(served):
    _call(served["port"], "GET", "/health")
    status, text = _call(served["port"], "GET", "/metrics")
    assert status == 200 and "# TYPE" in text and "churn_model" in text


def test_readme_pyfunc_snippet(served, monkeypatch):
    """The ``mlflow.pyfunc`` snippet of the python_function flavor section, as written, on the model the
    README's own run registered: the prediction column by default, every output column on request."""
    block = re.search(r"```python\n(import mlflow.pyfunc.*?)```", README.read_text(), re.S)
    assert block, "README lost the mlflow.pyfunc snippet"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{served['root'] / 'mlflow.db'}")
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # the README's own code
    model, df = namespace["model"], namespace["df"]
    assert model.metadata.flavors["python_function"]["loader_module"] == "sparkpipe.pyfunc"
    (prediction,) = model.predict(df)
    full = model.predict(df, params={"output": "full"})
    assert prediction in (0.0, 1.0) and full["prediction"].tolist() == [prediction]
    assert abs(sum(full["probability"][0]) - 1) < 1e-9
    status, ours = _call(
        served["port"],
        "POST",
        "/predict",
        {"model_id": "churn_model", "features": json.loads(df.to_json(orient="records"))[0]},
    )
    assert status == 200, ours
    assert ours["predictions"][0]["prediction"] == prediction
