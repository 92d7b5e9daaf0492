"""The command groups: ``data`` (built-in and generated data), ``models`` (the registry: list, promote,
rollback, history), ``monitor`` (drift) and ``cluster`` (a local standalone cluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sparkpipe.cli.common import (
    ConfigOpt,
    JsonOpt,
    MonitorSetOpt,
    RegistrySetOpt,
    SparkSetOpt,
    _actor,
    _load,
    cluster_app,
    console,
    data_app,
    models_app,
    monitor_app,
)
from sparkpipe.errors import ConfigError


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
