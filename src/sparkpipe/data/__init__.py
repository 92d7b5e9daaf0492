"""Data access: reading with quarantine and lineage, atomic writes, built-in data sets.

See :mod:`sparkpipe.data.io` and :mod:`sparkpipe.data.datasets`.
"""

from sparkpipe.data.datasets import (
    BUILTIN_DATASETS,
    DatasetInfo,
    dataset_info,
    generate,
    list_datasets,
    load_builtin,
)
from sparkpipe.data.io import (
    READERS,
    LoadResult,
    detect_format,
    get_reader,
    input_fingerprint,
    read_dataset,
    read_quarantine,
    require_columns,
    write_dataset,
)

__all__ = [
    "BUILTIN_DATASETS",
    "READERS",
    "DatasetInfo",
    "LoadResult",
    "dataset_info",
    "detect_format",
    "generate",
    "get_reader",
    "input_fingerprint",
    "list_datasets",
    "load_builtin",
    "read_dataset",
    "read_quarantine",
    "require_columns",
    "write_dataset",
]
