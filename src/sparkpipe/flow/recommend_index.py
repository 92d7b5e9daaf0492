"""The recommendation index of a fitted ALS model, written beside the saved pipeline at publish time.

``<model dir>/recommend/`` (read by :class:`sparkpipe.scoring.recommend.RecommendIndex`, no JVM):

* ``seen/part-0.parquet`` — every distinct ``(user, item)`` pair of the training split, in the ALS
  model's ids (after the pipeline's ``StringIndexer`` of string ids): the items ``/recommend`` excludes;
* ``recommend.json`` — the cold-start policy (``features.cold_start``) and the
  :data:`~sparkpipe.scoring.recommend.MAX_K` most rated training items with their counts (what an
  unknown user gets under ``popular``).

The pairs reach the driver one partition at a time (``toLocalIterator``) and are written in batches,
so the driver never holds more than a partition of them; the popularity list is one bounded ``limit``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparkpipe.scoring.recommend import INDEX_DIR, INDEX_FORMAT, MAX_K, META_FILE, SEEN_DIR

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

_BATCH_ROWS = 65_536


def als_stage(model: PipelineModel) -> Any | None:
    """The ALS model stage of a served pipeline (``None`` when it has none)."""
    for stage in reversed(model.stages):
        if type(stage).__name__ == "ALSModel":
            return stage
    return None


def write_recommend_index(
    model: PipelineModel, train: DataFrame, target: str | Path, cold_start: str
) -> Path:
    """Write ``<target>/recommend`` for the ALS pipeline ``model`` fitted on the raw ``train`` rows.

    Returns the index directory.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.ml import PipelineModel as _PipelineModel
    from pyspark.sql import functions as F

    als = als_stage(model)
    if als is None:
        raise ValueError("write_recommend_index needs a pipeline with an ALS model stage")
    user, item = als.getUserCol(), als.getItemCol()
    features = [s for s in model.stages if s is not als and type(s).__name__ != "IndexToString"]
    frame = _PipelineModel(stages=features).transform(train) if features else train
    pairs = frame.select(F.col(user).cast("int").alias("user"), F.col(item).cast("int").alias("item"))
    pairs = pairs.where(F.col("user").isNotNull() & F.col("item").isNotNull())
    root = Path(target) / INDEX_DIR
    (root / SEEN_DIR).mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("user", pa.int32()), ("item", pa.int32())])
    n = 0
    with pq.ParquetWriter(str(root / SEEN_DIR / "part-0.parquet"), schema) as writer:
        batch: list[tuple[int, int]] = []
        for row in pairs.distinct().toLocalIterator(prefetchPartitions=False):
            batch.append((row[0], row[1]))
            if len(batch) >= _BATCH_ROWS:
                writer.write_table(_table(batch, schema))
                n += len(batch)
                batch = []
        if batch:
            writer.write_table(_table(batch, schema))
            n += len(batch)
    popular = (
        pairs.groupBy("item")
        .count()
        .orderBy(F.col("count").desc(), F.col("item").asc())
        .limit(MAX_K)
        .collect()
    )
    meta = {
        "format": INDEX_FORMAT,
        "cold_start": cold_start,
        "user_col": user,
        "item_col": item,
        "seen_pairs": n,
        "popular": [int(r["item"]) for r in popular],
        "popular_counts": [int(r["count"]) for r in popular],
    }
    (root / META_FILE).write_text(json.dumps(meta))
    log.info("recommendation index: %d seen (user, item) pairs, %d popular items", n, len(popular))
    return root


def _table(rows: list[tuple[int, int]], schema: Any) -> Any:
    import pyarrow as pa

    users, items = zip(*rows, strict=True)
    return pa.Table.from_arrays([pa.array(users, pa.int32()), pa.array(items, pa.int32())], schema=schema)
