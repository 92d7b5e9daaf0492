"""The training path: one sequence that ``run``, ``train``, ``compare``, tuning and ``/train`` jobs share.

``prepare`` (:mod:`.prepare`: read, label, split) → ``fit`` (:mod:`.fit`: feature stages, estimator,
optionally tuned) → ``evaluate`` (:mod:`.evaluate`: decision threshold, metrics per split) →
``publish`` (:mod:`.publish`: log to MLflow, explain, log the model, report, write the run record, and
last of all register the version and move its alias). :mod:`.run` strings them together for one
algorithm; :mod:`sparkpipe.compare` loops over ``fit → evaluate`` and publishes the winner.
:mod:`.batch` scores and evaluates saved models with Spark.

The values on each arrow are the frozen dataclasses of :mod:`sparkpipe.core`.
"""
