"""What the commands share: the Typer apps, the consoles (the only place sparkpipe prints), the option
types, loading the config, and the small tables and lines several commands print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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


def _print_published(result: Any) -> None:
    """What ``run`` and ``compare`` both print after publishing: the MLflow run, the registered version
    and the promotion gate's decision, the report."""
    if result.run_id:
        console.print(f"MLflow run: [bold]{result.run_id}[/bold]  (tracking: {result.tracking_uri})")
    _print_promotion(result.registered_name, result.registered_version, result.promotion)
    if result.report_path:
        console.print(f"report: {result.report_path}")


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


def _actor() -> str:
    """Who runs the CLI, for the alias history."""
    import getpass

    try:
        return f"cli {getpass.getuser()}"
    except Exception:
        return "cli"
