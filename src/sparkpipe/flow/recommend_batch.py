"""``sparkpipe recommend``: recommendations of a saved or registered ALS model, without Spark.

One user (:func:`recommend_user`) or every user of the model (:func:`recommend_all_users`), both through
the NumPy :class:`~sparkpipe.scoring.recommend.Recommender` — the same code ``GET /recommend`` runs, so
items rated in training are excluded (the model's ``recommend/`` index) and the order is Spark's
``recommendForAllUsers`` order of what is left. The table is written in batches of users (memory holds
one batch), to parquet (a temp sibling renamed into place) or to a Delta table (delta-rs).

Output rows: ``user``, ``rank`` (1 = best), ``item``, ``score`` (ids as the client knows them).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sparkpipe.config import MlflowConfig
from sparkpipe.errors import DataError, ModelError
from sparkpipe.fsio import swap_into_place, temp_sibling

log = logging.getLogger(__name__)

FORMATS = ("parquet", "delta")
_BATCH_USERS = 2048


def load_recommender(model: str, mlflow_cfg: MlflowConfig | None = None) -> Any:
    """The :class:`~sparkpipe.scoring.recommend.Recommender` of a model URI or local model directory."""
    from sparkpipe.scoring import compile_pipeline
    from sparkpipe.scoring.models import ALSTwin
    from sparkpipe.scoring.recommend import Recommender
    from sparkpipe.tracking import local_model_dir

    path = local_model_dir(model, mlflow_cfg)
    plan = compile_pipeline(path)
    if not isinstance(plan.model_stage, ALSTwin):
        raise ModelError(
            f"model {model!r} is not a recommender (its model stage is "
            f"{type(plan.model_stage).__name__}); sparkpipe recommend needs an ALS model"
        )
    return Recommender.from_model_dir(plan, path)


def recommend_user(
    model: str, user: Any, k: int, mlflow_cfg: MlflowConfig | None = None, exclude_seen: bool = True
) -> dict[str, Any]:
    """The top-``k`` answer for one user, as ``GET /recommend`` gives it (``user``: a raw id, a
    numeric string is the number when the model's user column is numeric)."""
    rec = load_recommender(model, mlflow_cfg)
    from sparkpipe.scoring.recommend import typed_id

    return rec.recommend(typed_id(user, rec.user_type, "user"), k, exclude_seen=exclude_seen).to_dict()


def recommend_all_users(
    model: str,
    output: str,
    k: int,
    output_format: str = "parquet",
    mlflow_cfg: MlflowConfig | None = None,
    exclude_seen: bool = True,
) -> dict[str, Any]:
    """Top-``k`` items of every user the model knows, written to ``output``; returns a summary."""
    from sparkpipe.scoring.recommend import check_k

    if output_format not in FORMATS:
        raise DataError(f"--format {output_format!r} is not one of {', '.join(FORMATS)}")
    k = check_k(k)
    rec = load_recommender(model, mlflow_cfg)
    schema = _schema(rec)
    rows = 0

    def batches() -> Iterator[Any]:
        nonlocal rows
        for table in _tables(rec, k, exclude_seen, schema):
            rows += table.num_rows
            yield from table.to_batches()

    if output_format == "parquet":
        _write_parquet(output, schema, batches())
    else:
        _write_delta(output, schema, batches())
    return {"users": rec.n_users, "rows": rows, "k": k, "output_path": output, "format": output_format}


def _schema(rec: Any) -> Any:
    import pyarrow as pa

    def id_type(t: str) -> Any:
        return pa.string() if t.split("(")[0].lower() in ("string", "varchar", "char") else pa.int64()

    return pa.schema(
        [
            ("user", id_type(rec.user_type)),
            ("rank", pa.int32()),
            ("item", id_type(rec.item_type)),
            ("score", pa.float64()),
        ]
    )


def _tables(rec: Any, k: int, exclude_seen: bool, schema: Any) -> Iterator[Any]:
    import pyarrow as pa

    users = rec.raw_users()
    for start in range(0, len(users), _BATCH_USERS):
        cols: dict[str, list[Any]] = {"user": [], "rank": [], "item": [], "score": []}
        for user in users[start : start + _BATCH_USERS]:
            answer = rec.recommend(user, k, exclude_seen=exclude_seen)
            n = len(answer.items)
            cols["user"] += [user] * n
            cols["rank"] += list(range(1, n + 1))
            cols["item"] += answer.items
            cols["score"] += answer.scores or [None] * n
        yield pa.table(cols, schema=schema)


def _write_parquet(output: str, schema: Any, batches: Iterator[Any]) -> None:
    import pyarrow.parquet as pq

    target = Path(output).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    tmp.mkdir()
    try:
        with pq.ParquetWriter(str(tmp / "part-0.parquet"), schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_delta(output: str, schema: Any, batches: Iterator[Any]) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    reader = pa.RecordBatchReader.from_batches(schema, batches)
    write_deltalake(output, reader, mode="overwrite", schema_mode="overwrite")
