"""The pipeline commands: ``run``, ``train``, ``compare``, ``evaluate``, ``predict``, ``stream``,
``validate`` and ``serve``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sparkpipe.cli.common import (
    DEFAULT_CONFIG,
    CompareSetOpt,
    ConfigOpt,
    JsonOpt,
    PromoteOpt,
    RegistrySetOpt,
    RunSetOpt,
    ServeSetOpt,
    SparkSetOpt,
    TrainSetOpt,
    ValidateSetOpt,
    _fmt,
    _load,
    _metrics_table,
    _print_published,
    _promotion_override,
    app,
    console,
    err_console,
)
from sparkpipe.core import RunResult
from sparkpipe.errors import ConfigError


def _print_run(result: RunResult, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
    else:
        _print_run_tables(result)
    for warning in getattr(result, "warnings", None) or []:  # stderr, so --json output stays clean
        err_console.print(f"[yellow]warning:[/yellow] {warning}")


def _print_run_tables(result: RunResult) -> None:
    console.print(_metrics_table(result.metrics, f"{result.algorithm} · {result.task}"))
    lineage = result.lineage
    by_reason = lineage.get("quarantined_by_reason") or {}
    detail = f" ({', '.join(f'{k}: {v}' for k, v in by_reason.items())})" if by_reason else ""
    where = f" → {lineage['quarantine_path']}" if lineage.get("quarantine_path") else ""
    console.print(
        f"data: {lineage.get('path', '?')} · {lineage.get('row_count', '?')} rows · "
        f"{lineage.get('quarantined_count', 0)} quarantined{detail}{where}"
    )
    for column, what in (
        (lineage.get("type_inference") or {}).get("text_despite_typed_values") or {}
    ).items():
        console.print(f"[bold yellow]warning:[/bold yellow] column {column!r} read as text ({what})")
    _print_published(result)
    total = result.timings.get("total")
    if total:
        console.print(f"finished in {total:.1f}s · outputs in {result.output_path}")


@app.command()
def run(
    config: ConfigOpt = None, set_: RunSetOpt = None, promote: PromoteOpt = None, as_json: JsonOpt = False
) -> None:
    """Run the whole pipeline: data → features → train (tune) → evaluate → MLflow → registry.

    Example: sparkpipe run --config config/pipeline_config.yaml --set model.algorithm=gbt
    """
    from sparkpipe.flow.run import run_pipeline

    cfg, raw = _load(config, [*(set_ or []), *_promotion_override(promote)])
    _print_run(run_pipeline(cfg, raw), as_json)


@app.command()
def train(
    config: ConfigOpt = None,
    set_: TrainSetOpt = None,
    algorithm: Annotated[str | None, typer.Option(help="Algorithm name, e.g. random_forest.")] = None,
    data: Annotated[str | None, typer.Option(help="Input path or builtin:<name>.")] = None,
    promote: PromoteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train one algorithm (a shortcut for ``run`` with --algorithm/--data overrides).

    Example: sparkpipe train --algorithm random_forest --data builtin:churn --set model.hyperparameters.numTrees=50
    """
    from sparkpipe.flow.run import run_pipeline

    overrides = list(set_ or [])
    if algorithm:
        overrides.append(f"model.algorithm={algorithm}")
    if data:
        overrides.append(f"data.input_path={data}")
    cfg, raw = _load(config, [*overrides, *_promotion_override(promote)])
    _print_run(run_pipeline(cfg, raw), as_json)


@app.command()
def compare(
    config: ConfigOpt = None,
    set_: CompareSetOpt = None,
    algorithms: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated algorithms, e.g. logistic_regression,random_forest,gbt "
            "(default: compare.algorithms)."
        ),
    ] = None,
    tune: Annotated[
        bool | None,
        typer.Option("--tune/--no-tune", help="Tune each algorithm first (default: compare.tune)."),
    ] = None,
    promote: PromoteOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train several algorithms on the same split, print the leaderboard, register the winner.

    Example: sparkpipe compare --config config/pipeline_config.yaml --algorithms logistic_regression,random_forest,gbt
    """
    from sparkpipe.compare import compare as run_compare
    from sparkpipe.compare import leaderboard_table

    overrides = list(set_ or [])
    if algorithms:
        names = [a.strip() for a in algorithms.split(",") if a.strip()]
        overrides.append(f"compare.algorithms={json.dumps(names)}")
    cfg, raw = _load(config, [*overrides, *_promotion_override(promote)])
    result = run_compare(cfg, tune=tune, raw_yaml=raw)
    for warning in result.warnings:  # stderr, so --json output stays clean
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    columns, rows = leaderboard_table(result.leaderboard, result.metric)
    table = Table(title=f"leaderboard · {result.task} · {result.metric} ({result.direction})")
    for col in columns:
        table.add_column(col, justify="left" if col == "algorithm" else "right")
    for row in rows:
        table.add_row(*[_fmt(v) if isinstance(v, float) else ("—" if v is None else str(v)) for v in row])
    console.print(table)
    console.print(result.note)
    console.print(f"winner: [bold]{result.winner}[/bold]")
    _print_published(result)


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="models:/name@alias, name/version, runs:/... or a local dir.")],
    data: Annotated[str, typer.Option(help="Labelled data path or builtin:<name>.")],
    target: Annotated[str | None, typer.Option(help="Target column (default: the model's).")] = None,
    config: ConfigOpt = None,
    set_: RegistrySetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a saved or registered model on a labelled data set.

    Example: sparkpipe evaluate --model models:/churn_model@champion --data builtin:churn
    """
    from sparkpipe.flow.batch import evaluate_saved

    cfg, _ = _load(config, set_)
    metrics = evaluate_saved(model, data, cfg, target=target)
    if as_json:
        console.print_json(json.dumps(metrics))
    else:
        console.print(_metrics_table(metrics, f"evaluation of {model}"))


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="models:/name@alias, name/version, runs:/... or a local dir.")],
    input: Annotated[str, typer.Option("--input", help="Data to score.")],
    output: Annotated[str, typer.Option(help="Where to write predictions.")],
    format: Annotated[str, typer.Option(help="Output format: parquet, csv, json, delta.")] = "parquet",
    config: ConfigOpt = None,
    set_: SparkSetOpt = None,
) -> None:
    """Batch scoring with Spark: read INPUT, score with the model, write OUTPUT atomically.

    Example: sparkpipe predict --model models:/churn_model@champion --input data/new.csv --output output/scored --format parquet
    """
    from sparkpipe.flow.batch import batch_predict

    cfg, _ = _load(config, set_)
    res = batch_predict(model, input, output, cfg.spark, output_format=format, mlflow_cfg=cfg.mlflow)
    version = f" (Delta version {res['output_delta_version']})" if "output_delta_version" in res else ""
    console.print(
        f"scored {res['rows']} rows → {res['output_path']}{version} ({res['quarantined']} quarantined) "
        f"with {res['model_name']} version {res['model_version']}"
    )
    if res.get("run_id"):
        console.print(f"lineage: MLflow run {res['run_id']} (experiment {cfg.mlflow.experiment_name!r})")
    for warning in res.get("warnings", []):
        err_console.print(f"[yellow]warning:[/yellow] {warning}")


@app.command()
def stream(
    model: Annotated[str, typer.Option(help="models:/name@alias, name/version, runs:/... or a local dir.")],
    source: Annotated[
        str, typer.Option(help="Directory of csv/json/parquet files, or kafka://HOST:PORT/TOPIC.")
    ],
    sink: Annotated[str, typer.Option(help="Output directory (parquet) or Delta table.")],
    checkpoint: Annotated[str, typer.Option(help="Spark checkpoint directory (reuse it to resume).")],
    format: Annotated[str, typer.Option(help="Output format: parquet or delta.")] = "parquet",
    source_format: Annotated[
        str, typer.Option(help="csv, json or parquet (auto: from the files' extensions).")
    ] = "auto",
    schema: Annotated[
        str | None,
        typer.Option(
            help="Spark DDL of the input, e.g. 'id BIGINT, plan STRING' (default: the model's "
            "columns, plus the other columns of the files already there)."
        ),
    ] = None,
    source_option: Annotated[
        list[str] | None,
        typer.Option(help="Reader option KEY=VALUE (repeatable), e.g. sep=; or kafka.security.protocol=SSL."),
    ] = None,
    trigger_seconds: Annotated[
        float | None, typer.Option(help="Start a micro-batch every N seconds (default: when data arrives).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One micro-batch, then stop.")] = False,
    available_now: Annotated[
        bool, typer.Option("--available-now", help="Everything there now (in micro-batches), then stop.")
    ] = False,
    max_per_trigger: Annotated[
        int | None, typer.Option(help="Files (Kafka: offsets) per micro-batch.")
    ] = None,
    quarantine: Annotated[
        str | None, typer.Option(help="Where malformed records go (default: <sink>_quarantine).")
    ] = None,
    timeout_seconds: Annotated[
        float | None, typer.Option(help="Stop a continuous stream after N seconds.")
    ] = None,
    config: ConfigOpt = None,
    set_: SparkSetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Streaming scoring with exactly-once output (Spark Structured Streaming).

    Example: sparkpipe stream --model models:/churn_model@champion --source data/incoming --sink output/scored_stream --checkpoint output/stream_ckpt --format delta --available-now
    """
    from sparkpipe.flow.prepare import setup_logging
    from sparkpipe.flow.stream import stream_predict

    if once and available_now:
        raise typer.BadParameter("choose one of --once and --available-now", param_hint="--once")
    options: dict[str, str] = {}
    for item in source_option or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--source-option")
        options[key] = value
    cfg, _ = _load(config, set_)
    setup_logging(cfg)  # a long-running stream logs each micro-batch as it commits (stderr)
    res = stream_predict(
        model,
        source,
        sink,
        checkpoint,
        output_format=format,
        source_format=source_format,
        schema=schema,
        source_options=options,
        trigger_seconds=trigger_seconds,
        trigger="once" if once else "available_now" if available_now else "continuous",
        max_per_trigger=max_per_trigger,
        quarantine=quarantine,
        timeout_seconds=timeout_seconds,
        spark_cfg=cfg.spark,
        mlflow_cfg=cfg.mlflow,
    )
    _print_stream(res, as_json)


def _print_stream(res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(res, default=str))
        return
    for p in res["progress"]:
        console.print(
            f"batch {p['batch_id']}: {p['input_rows']} rows · {p['processed_rows_per_s']:.0f} rows/s · "
            f"{p['latency_ms']} ms"
        )
    version = (
        f" (Delta version {res['output_delta_version']})"
        if res.get("output_delta_version") is not None
        else ""
    )
    console.print(
        f"streamed {res['written']} rows in {len(res['batches'])} micro-batch(es) → {res['sink']}{version} · "
        f"{res['quarantined']} quarantined → {res['quarantine_path']} · model {res['model_name']} "
        f"version {res['model_version']}"
    )


@app.command()
def recommend(
    model: Annotated[str, typer.Option(help="models:/name@alias, name/version, runs:/... or a local dir.")],
    user: Annotated[str | None, typer.Option(help="One user id: print its top-k items as JSON.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Items per user (1..1000).")] = 10,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="Every user of the model, written to --output.")
    ] = False,
    output: Annotated[str | None, typer.Option(help="Table to write with --all-users.")] = None,
    format: Annotated[
        str, typer.Option(help="Output format with --all-users: parquet or delta.")
    ] = "parquet",
    include_seen: Annotated[
        bool,
        typer.Option("--include-seen", help="Keep the items each user rated in training (Spark's lists)."),
    ] = False,
    config: ConfigOpt = None,
    set_: RegistrySetOpt = None,
) -> None:
    """Top-k recommendations of an ALS model, with NumPy (no Spark): one user as JSON, or every user to a
    table (columns user, rank, item, score). Items a user rated in training are left out.

    Example: sparkpipe recommend --model models:/movielens_als@champion --user 1 -k 10
    """
    from sparkpipe.flow.recommend_batch import recommend_all_users, recommend_user

    if all_users == (user is not None):
        raise typer.BadParameter("give either --user ID or --all-users (with --output)", param_hint="--user")
    if all_users and not output:
        raise typer.BadParameter("--all-users writes a table: add --output PATH", param_hint="--output")
    cfg, _ = _load(config, set_)
    if user is not None:
        answer = recommend_user(model, user, k, cfg.mlflow, exclude_seen=not include_seen)
        console.print_json(json.dumps(answer))
        return
    assert output is not None
    res = recommend_all_users(model, output, k, format, cfg.mlflow, exclude_seen=not include_seen)
    console.print(
        f"recommended {res['k']} items to {res['users']} users ({res['rows']} rows) → {res['output_path']}"
    )


@app.command()
def validate(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pipeline YAML to check.")],
    set_: ValidateSetOpt = None,
) -> None:
    """Validate a config file without starting Spark: every problem at once.

    Besides the schema and the algorithm registry, it checks what can be checked in seconds: the
    spark:// master answers, object-store paths have their connector, a local input path exists and has
    the target column, and the task fits the target.

    Example: sparkpipe validate --config config/pipeline_config.yaml --set features.target=churned
    """
    from sparkpipe.config import check_config, load_raw
    from sparkpipe.preflight import preflight_problems
    from sparkpipe.session import master_problem

    raw, source = load_raw(config, set_)
    cfg, problems = check_config(raw, source)
    if cfg is not None:
        reported = {path for path, _ in problems}
        problems += [p for p in preflight_problems(cfg, probe_master=False) if p[0] not in reported]
    if problems or cfg is None:
        raise ConfigError(problems, source)
    console.print(f"[green]valid[/green]: {config} · {cfg.model.algorithm} on {cfg.data.input_path}")
    unreachable = master_problem(cfg.spark.master)
    if unreachable:  # the file is fine; the cluster may simply not be up yet
        err_console.print(f"[yellow]note:[/yellow] {unreachable}")


@app.command()
def serve(
    config: ConfigOpt = None,
    set_: ServeSetOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from deployment.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from deployment.port).")] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Model(s) to load at start (name, name@alias).")
    ] = None,
) -> None:
    """Start the FastAPI prediction service (JVM-free NumPy scoring).

    Example: sparkpipe serve --config config/pipeline_config.yaml --port 8000

    Without --config, config/pipeline_config.yaml is used when it exists (else the built-in defaults).
    With no model configured the registry's most recently updated model is served; any other
    registered model is loaded by name on its first request.
    """
    from sparkpipe.serving.app import run as run_server
    from sparkpipe.serving.settings import ServingSettings

    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
        err_console.print(f"using {DEFAULT_CONFIG} (pass --config to choose another file)")
    # the service reads only deployment and mlflow: training-only problems do not stop it from serving
    # (a /train job checks the whole config, registries included, before it is queued)
    cfg, _ = _load(config, set_, semantic=False)
    settings = ServingSettings.from_config(
        cfg, host=host, port=port, models=model, train_config_path=str(config.resolve()) if config else None
    )
    run_server(settings)
