"""One run, end to end: ``prepare → fit → evaluate → publish`` for one algorithm.

``sparkpipe run`` and ``sparkpipe train`` call :func:`run_pipeline`; so do ``/train`` jobs (in their
own process). Tuning (``tuning.enabled``) happens inside ``fit``, with its trials as child runs of
the run opened here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sparkpipe.config import PipelineConfig
from sparkpipe.core import RunResult
from sparkpipe.flow.evaluate import evaluate_fit
from sparkpipe.flow.fit import fit_model
from sparkpipe.flow.prepare import prepare_data, start
from sparkpipe.flow.publish import publish

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_pipeline(
    cfg: PipelineConfig, raw_yaml: str | None = None, spark: SparkSession | None = None
) -> RunResult:
    """Run the whole pipeline for ``cfg``; return what it produced.

    Parameters
    ----------
    cfg
        The validated configuration.
    raw_yaml
        The YAML text as the user wrote it, logged to MLflow next to the resolved config.
    spark
        An existing session to reuse (tests, notebooks); by default one is built from ``cfg.spark``.
    """
    from sparkpipe.tracking import Tracker

    t_start = time.perf_counter()
    spark, progress = start(cfg, spark)
    data = prepare_data(spark, cfg, progress)
    tracker = Tracker(cfg)
    evaluation = None
    try:
        # the run is open while training, so tuning trials are logged as its child runs
        with tracker.run(
            run_name=f"{cfg.model.algorithm}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"sparkpipe.task": data.task, "sparkpipe.algorithm": cfg.model.algorithm},
        ) as run:
            fit = fit_model(spark, cfg, data, progress, tracker=tracker)
            evaluation = evaluate_fit(fit, cfg.evaluation, progress)
            return publish(cfg, tracker, run, fit, evaluation, progress, raw_yaml=raw_yaml, started=t_start)
    finally:
        if evaluation is not None:
            evaluation.release()
        data.release()
