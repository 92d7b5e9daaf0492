"""The recommendation index of a fitted ALS model, written beside the saved pipeline at publish time.

``<model dir>/recommend/`` (read by :class:`sparkpipe.scoring.recommend.RecommendIndex`, no JVM):

* ``seen/part-0.parquet`` — every distinct ``(user, item)`` pair of the training split, in the ALS
  model's ids (after the pipeline's ``StringIndexer`` of string ids): the items ``/recommend`` excludes;
* ``recommend.json`` — the cold-start policy (``features.cold_start``) and the
  :data:`~sparkpipe.scoring.recommend.MAX_K` items rated by the most training users, with those counts (what an
  unknown user gets under ``popular``).

One Spark job collects the distinct pairs as Arrow (two int32 columns: 8 bytes a pair, the same table
serving holds in memory); the parquet file and the popularity counts are computed from that table with
pyarrow, so the training split is transformed and read once.
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
    pairs = pairs.where(F.col("user").isNotNull() & F.col("item").isNotNull()).distinct()
    schema = pa.schema([("user", pa.int32()), ("item", pa.int32())])
    seen = pairs.toArrow().cast(schema)
    root = Path(target) / INDEX_DIR
    (root / SEEN_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(seen, str(root / SEEN_DIR / "part-0.parquet"))
    popular = (
        seen.group_by("item")
        .aggregate([("user", "count")])
        .sort_by([("user_count", "descending"), ("item", "ascending")])
        .slice(0, MAX_K)
    )
    n = seen.num_rows
    meta = {
        "format": INDEX_FORMAT,
        "cold_start": cold_start,
        "user_col": user,
        "item_col": item,
        "seen_pairs": n,
        "popular": popular.column("item").to_pylist(),
        "popular_counts": popular.column("user_count").to_pylist(),
    }
    (root / META_FILE).write_text(json.dumps(meta))
    log.info("recommendation index: %d seen (user, item) pairs, %d popular items", n, len(popular))
    return root
