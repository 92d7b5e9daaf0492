"""sparkpipe: one YAML file from raw data to a served Spark ML model."""

from sparkpipe.errors import SparkpipeError

__version__ = "0.1.0"
__all__ = ["SparkpipeError", "__version__"]
