"""The ``sparkpipe`` command line: thin commands that parse, call a service function and format.

This module is the only place that prints (through ``rich``); everything else logs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sparkpipe.core import RunResult
from sparkpipe.errors import ConfigError, SparkpipeError, explain_spark_failure

app = typer.Typer(
    name="sparkpipe",
    help="Big Data ML Pipeline: YAML → Spark MLlib → MLflow → FastAPI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Built-in data sets and data generation.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models in the MLflow registry.", no_args_is_help=True)
monitor_app = typer.Typer(help="Monitoring of served models (drift).", no_args_is_help=True)
cluster_app = typer.Typer(
    help="A local standalone Spark cluster on 127.0.0.1 (master + workers) for spark:// runs.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(cluster_app, name="cluster")
app.add_typer(monitor_app, name="monitor")

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Pipeline YAML (default: built-in defaults).")
]


def _set_option(example: str) -> Any:
    """The repeatable ``--set KEY=VALUE`` option, its help showing a key that fits the command."""
    return Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help=f"Override a config key (repeatable; YAML values), e.g. --set {example}"
        ),
    ]


RunSetOpt = _set_option("model.algorithm=gbt")
TrainSetOpt = _set_option("model.hyperparameters.maxDepth=5")
CompareSetOpt = _set_option("compare.metric=auc_pr")
RegistrySetOpt = _set_option("mlflow.tracking_uri=sqlite:///mlflow.db")
SparkSetOpt = _set_option("spark.driver_memory=4g")
ValidateSetOpt = _set_option("features.target=churned")
ServeSetOpt = _set_option("deployment.port=8080")
MonitorSetOpt = _set_option("deployment.prediction_log.path=.sparkpipe/predictions.db")
DEFAULT_CONFIG = Path("config/pipeline_config.yaml")
"""The project's config, relative to the working directory: what a bare ``sparkpipe serve`` uses."""
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of tables.")]
PromoteOpt = Annotated[
    bool | None,
    typer.Option(
        "--promote/--no-promote",
        help="Make the new version champion (--promote) or challenger (--no-promote) without the "
        "promotion gate (default: the gate of deployment.promotion decides).",
    ),
]


def _promotion_override(promote: bool | None) -> list[str]:
    return [] if promote is None else [f"deployment.promotion.force={'true' if promote else 'false'}"]


def _print_promotion(name: str | None, version: str | None, promotion: dict[str, Any] | None) -> None:
    if not name:
        return
    if not promotion:
        console.print(f"registered model: [bold]{name}[/bold] version [bold]{version}[/bold]")
        return
    colour = "green" if promotion["decision"] == "champion" else "yellow"
    console.print(
        f"registered model: [bold]{name}[/bold] version [bold]{version}[/bold] → "
        f"[bold {colour}]{promotion['alias']}[/bold {colour}]  (models:/{name}@{promotion['alias']})"
    )
    console.print(f"promotion gate: {promotion['reason']}")


def _load(config: Path | None, overrides: list[str] | None, semantic: bool = True) -> tuple[Any, str | None]:
    from sparkpipe.config import load_config

    cfg = load_config(config, overrides, semantic=semantic)
    raw = config.read_text() if config else None
    return cfg, raw


def _metrics_table(metrics: dict[str, float], title: str = "Metrics") -> Table:
    table = Table(title=title, show_lines=False)
    splits = sorted(
        {k.split("_", 1)[0] for k in metrics if "_" in k and k.split("_", 1)[0] in ("validation", "test")}
    )
    if splits:
        names = sorted({k.split("_", 1)[1] for k in metrics if k.split("_", 1)[0] in splits})
        table.add_column("metric")
        for s in splits:
            table.add_column(s, justify="right")
        for n in names:
            table.add_row(n, *[_fmt(metrics.get(f"{s}_{n}")) for s in splits])
    else:
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in sorted(metrics.items()):
            table.add_row(k, _fmt(v))
    return table


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


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
    if result.run_id:
        console.print(f"MLflow run: [bold]{result.run_id}[/bold]  (tracking: {result.tracking_uri})")
    _print_promotion(result.registered_name, result.registered_version, result.promotion)
    if result.report_path:
        console.print(f"report: {result.report_path}")
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
    if result.run_id:
        console.print(f"MLflow run: [bold]{result.run_id}[/bold]  (tracking: {result.tracking_uri})")
    _print_promotion(result.registered_name, result.registered_version, result.promotion)
    if result.report_path:
        console.print(f"report: {result.report_path}")


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
    console.print(f"scored {res['rows']} rows → {res['output_path']} ({res['quarantined']} quarantined)")


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


# ------------------------------------------------------------------------------------------ data
@data_app.command("generate")
def data_generate(
    name: Annotated[str, typer.Argument(help="Built-in generator: churn, taxi, segments.")],
    rows: Annotated[int, typer.Option(help="Number of rows.")] = 100_000,
    out: Annotated[str, typer.Option(help="Output path.")] = "data/generated",
    format: Annotated[str, typer.Option(help="parquet, csv or delta.")] = "parquet",
    seed: Annotated[int, typer.Option(help="Seed; same seed and rows → same data.")] = 42,
    partitions: Annotated[int | None, typer.Option(help="Spark partitions (default: by size).")] = None,
    config: ConfigOpt = None,
    set_: SparkSetOpt = None,
) -> None:
    """Generate a synthetic data set in parallel with Spark (deterministic from the seed).

    Example: sparkpipe data generate churn --rows 1000000 --out data/churn --format parquet
    """
    import time

    from sparkpipe.data.datasets import generate
    from sparkpipe.data.io import write_dataset
    from sparkpipe.flow.prepare import setup_logging
    from sparkpipe.session import get_spark

    cfg, _ = _load(config, set_)
    setup_logging(cfg)
    if format not in ("parquet", "csv", "delta", "json"):
        raise ConfigError([("--format", f"{format!r} is not one of parquet, csv, delta, json")])
    t0 = time.perf_counter()
    spark = get_spark(cfg.spark, cfg.optimization)
    df = generate(spark, name, rows, seed=seed, num_partitions=partitions)
    write_dataset(df, out, format)
    console.print(f"wrote {rows:,} rows of {name!r} to {out} ({format}) in {time.perf_counter() - t0:.1f}s")


@data_app.command("list")
def data_list() -> None:
    """List the built-in data sets.

    Example: sparkpipe data list
    """
    from sparkpipe.data.datasets import BUILTIN_DATASETS

    table = Table(title="built-in data sets (use data.input_path: builtin:<name>)")
    for col in ("name", "task", "target", "description"):
        table.add_column(col)
    for name, info in sorted(BUILTIN_DATASETS.items()):
        table.add_row(name, str(info.task), str(info.target), info.description)
    console.print(table)


# ---------------------------------------------------------------------------------------- models
@models_app.command("list")
def models_list(config: ConfigOpt = None, set_: RegistrySetOpt = None, as_json: JsonOpt = False) -> None:
    """List registered models, versions, aliases and their run metrics.

    Example: sparkpipe models list --config config/pipeline_config.yaml
    """
    from sparkpipe.tracking import Registry

    cfg, _ = _load(config, set_)
    models = Registry(cfg.mlflow).list_models()
    if as_json:
        console.print_json(json.dumps(models, default=str))
        return
    table = Table(title=f"registered models ({len(models)})")
    for col in ("model", "version", "aliases", "status", "key metrics"):
        table.add_column(col)
    for m in models:
        for v in m["versions"][:5]:
            key = {k: val for k, val in v["metrics"].items() if k.startswith("test_")}
            table.add_row(
                m["name"],
                v["version"],
                ",".join(v["aliases"]),
                v["status"],
                " ".join(f"{k.removeprefix('test_')}={val:.3f}" for k, val in sorted(key.items())[:4]),
            )
    console.print(table)


@models_app.command("promote")
def models_promote(
    name: str,
    version: str,
    alias: Annotated[str, typer.Option(help="Alias to point at the version.")] = "champion",
    reason: Annotated[str, typer.Option(help="Why (recorded in the model's history).")] = "promoted by hand",
    config: ConfigOpt = None,
    set_: RegistrySetOpt = None,
) -> None:
    """Point an alias (default ``champion``) at a model version; the move is recorded in the history.

    Example: sparkpipe models promote churn_model 3 --alias champion
    """
    from sparkpipe.tracking import Registry, move_aliases

    cfg, _ = _load(config, set_)
    reg = Registry(cfg.mlflow)
    reg.resolve(f"{name}/{version}")  # fails clearly when the version does not exist
    moved = move_aliases(reg, name, {alias: version}, reason=reason, actor=_actor())
    before = moved[0].from_version if moved else version
    console.print(f"{name}@{alias} → version {version}" + ("" if moved else " (already there)"))
    if moved:
        console.print(
            f"  was {before or 'unset'}; undo with: sparkpipe models rollback {name} --alias {alias}"
        )


@models_app.command("rollback")
def models_rollback(
    name: str,
    alias: Annotated[str, typer.Option(help="Alias to move back.")] = "champion",
    reason: Annotated[
        str, typer.Option(help="Why (recorded in the model's history).")
    ] = "rolled back by hand",
    config: ConfigOpt = None,
    set_: RegistrySetOpt = None,
) -> None:
    """Point an alias (default ``champion``) back at the version it had before (from the history).

    Example: sparkpipe models rollback churn_model
    """
    from sparkpipe.tracking import Registry, rollback_alias

    cfg, _ = _load(config, set_)
    move = rollback_alias(Registry(cfg.mlflow), name, alias, reason=reason, actor=_actor())
    console.print(f"{name}@{alias} → version {move.to_version} (was {move.from_version})")


@models_app.command("history")
def models_history(
    name: str,
    alias: Annotated[str | None, typer.Option(help="Only this alias.")] = None,
    config: ConfigOpt = None,
    set_: RegistrySetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every recorded alias move of a model: time, alias, from, to, reason, actor.

    Example: sparkpipe models history churn_model
    """
    from sparkpipe.tracking import Registry, alias_history

    cfg, _ = _load(config, set_)
    events = alias_history(Registry(cfg.mlflow), name, alias)
    if as_json:
        console.print_json(json.dumps(events))
        return
    table = Table(title=f"{name}: alias history ({len(events)} moves)")
    for col in ("time (UTC)", "alias", "from", "to", "reason", "actor"):
        table.add_column(col)
    for e in events:
        table.add_row(
            str(e.get("time_iso", "")),
            str(e.get("alias")),
            str(e.get("from") or "-"),
            str(e.get("to") or "-"),
            str(e.get("reason", "")),
            str(e.get("actor", "")),
        )
    console.print(table)


@monitor_app.command("drift")
def monitor_drift(
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model name.")],
    version: Annotated[
        str | None, typer.Option(help="Version whose profile is the reference (default: champion).")
    ] = None,
    window: Annotated[
        int | None, typer.Option(help="Latest logged rows compared (default deployment.drift.window).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only rows logged since (Unix seconds or ISO 8601).")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML report to write.")] = Path(
        "drift_report.html"
    ),
    config: ConfigOpt = None,
    set_: MonitorSetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drift of a model's inputs: its training profile against the prediction log, as an HTML report.

    Example: sparkpipe monitor drift --model churn_model --config my.yaml --output drift.html

    The log is the one the serving config names (deployment.prediction_log.path); thresholds and the
    default window come from deployment.drift.
    """
    from sparkpipe.serving.drift import monitor_drift as run_monitor

    cfg, _ = _load(config, set_, semantic=False)
    report, path = run_monitor(cfg, model, output, version=version, window=window, since=since)
    if as_json:
        console.print_json(json.dumps({**report, "report": str(path)}))
        return
    table = Table(
        title=f"{report['model']}/{report['version']}: {report['window_rows']} logged rows vs training profile"
    )
    for col in ("feature", "decided by", "score", "threshold", "drifted"):
        table.add_column(col)
    for f in report["features"]:
        if f.get("compared"):
            table.add_row(
                f["feature"],
                f["stattest"],
                f"{f['score']:.4g}",
                f"{f['threshold']:g}",
                "yes" if f["drifted"] else "no",
            )
        else:
            table.add_row(f["feature"], "-", "-", "-", f"not compared ({f.get('reason', '')})")
    console.print(table)
    share = report["drift_share"]
    console.print(
        f"drifted: {', '.join(report['drifted_features']) or 'none'} ({share:.0%} of "
        f"{report['features_compared']} features; data set drift: {'yes' if report['dataset_drift'] else 'no'})"
    )
    console.print(f"report: {path}")


def _actor() -> str:
    """Who runs the CLI, for the alias history."""
    import getpass

    try:
        return f"cli {getpass.getuser()}"
    except Exception:
        return "cli"


# --------------------------------------------------------------------------------------- cluster
StateOpt = Annotated[Path, typer.Option("--state", help="State file with the cluster's URL and process ids.")]


@cluster_app.command("start")
def cluster_start(
    workers: Annotated[int, typer.Option(help="Number of workers.")] = 2,
    cores: Annotated[int, typer.Option(help="Cores each worker offers.")] = 1,
    memory: Annotated[str, typer.Option(help="Memory each worker offers, e.g. 2g.")] = "2g",
    port: Annotated[int, typer.Option(help="Master port (0: any free port).")] = 7077,
    ui_port: Annotated[int, typer.Option(help="Master web UI port (0: any free port).")] = 8080,
    log_dir: Annotated[
        Path | None, typer.Option(help="Daemon logs (default: cluster-logs/ beside the state file).")
    ] = None,
    state: StateOpt = Path(".sparkpipe/cluster.json"),
) -> None:
    """Start a master and workers in the background; record them in the state file.

    Example: sparkpipe cluster start --workers 2 --cores 1 --memory 2g
    """
    from sparkpipe.cluster import start_cluster

    c = start_cluster(workers, cores, memory, port, ui_port, log_dir, state)
    console.print(f"master [bold]{c.master_url}[/bold] · UI {c.ui_url} · logs in {c.log_dir}")
    console.print(f"{len(c.workers)} worker(s) x {cores} core(s), {memory} · state in {state}")
    console.print(f"use it: sparkpipe run --config ... --set spark.master={c.master_url}")


@cluster_app.command("stop")
def cluster_stop(state: StateOpt = Path(".sparkpipe/cluster.json")) -> None:
    """Stop every process of the cluster recorded in the state file.

    Example: sparkpipe cluster stop
    """
    from sparkpipe.cluster import stop_cluster

    c = stop_cluster(state)
    console.print(f"stopped {c.master_url} (master and {len(c.workers)} worker(s))")


@cluster_app.command("status")
def cluster_status(state: StateOpt = Path(".sparkpipe/cluster.json"), as_json: JsonOpt = False) -> None:
    """Show the recorded processes and what the master reports (workers, applications).

    Example: sparkpipe cluster status --json
    """
    from sparkpipe.cluster import cluster_status as get_status

    st = get_status(state)
    if as_json:
        console.print_json(json.dumps(st, default=str))
        return
    ms = st.get("master_state") or {}
    console.print(
        f"master {st['master_url']} · UI {st['ui_url']} · "
        f"{'running' if st['master']['running'] else 'not running'} · {ms.get('status', '?')}"
    )
    by_port = {w.get("port"): w for w in ms.get("workers", [])}
    table = Table(title="workers")
    for col in ("#", "pid", "process", "master says", "cores used", "memory used (MB)"):
        table.add_column(col)
    for i, w in enumerate(st["workers"]):
        m = by_port.get(w["port"], {})
        table.add_row(
            str(i),
            str(w["pid"]),
            "running" if w["running"] else "gone",
            m.get("state", "—"),
            f"{m.get('coresused', '—')}/{m.get('cores', w['cores'])}",
            f"{m.get('memoryused', '—')}/{m.get('memory', '—')}",
        )
    console.print(table)
    for kind in ("activeapps", "completedapps"):
        for a in ms.get(kind, []):
            console.print(f"{kind.removesuffix('apps')} app {a.get('id')} {a.get('name')!r} {a.get('state')}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: friendly errors, non-zero exit codes."""
    logging.captureWarnings(True)
    try:
        app(args=argv, standalone_mode=False)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except SparkpipeError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own formatting
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        resource = explain_spark_failure(exc, _spark_settings())
        if resource is not None:
            logging.getLogger(__name__).debug("Spark failure", exc_info=exc)
            err_console.print(f"[red]error:[/red] {resource}")
            sys.exit(1)
        raise


def _spark_settings() -> dict[str, str]:
    """The running session's master and memory settings (empty when there is none)."""
    if "pyspark" not in sys.modules:
        return {}
    try:
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
        if sc is None:
            return {}
        conf = sc.getConf()
        keys = ("spark.master", "spark.driver.memory", "spark.executor.memory")
        return {k: conf.get(k) for k in keys if conf.get(k)}
    except Exception:  # the JVM may be gone
        return {}


if __name__ == "__main__":
    main()
