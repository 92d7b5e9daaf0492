"""notebooks/model_exploration.ipynb runs end to end (nbclient, a real IPython kernel) on small data.

The notebook's ``parameters`` cell is replaced by small values (400 rows, two algorithms, tiny forests,
everything written to a temporary directory); every other cell runs as committed. The kernel starts
its own Spark session (local[*] from the project's config), so this takes about 30 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "model_exploration.ipynb"


def _cell_seconds(nb) -> list[float]:
    """Each code cell's execution time (nbclient records when it started and when it replied)."""
    from datetime import datetime

    out = []
    for cell in nb.cells:
        times = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in times and "shell.execute_reply" in times:
            start, end = (
                datetime.fromisoformat(times[k].replace("Z", "+00:00"))
                for k in ("iopub.execute_input", "shell.execute_reply")
            )
            out.append(round((end - start).total_seconds(), 1))
    return out


def test_committed_notebook_has_no_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert sum("parameters" in c.get("metadata", {}).get("tags", []) for c in code) == 1


def test_notebook_executes(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = "\n".join(
        [
            f"CONFIG = {str(ROOT / 'config' / 'pipeline_config.yaml')!r}",
            "ROWS = 400",
            f"WORKDIR = {str(tmp_path)!r}",
            'ALGORITHMS = ["logistic_regression", "random_forest"]',
            "EXTRA = [",
            '    "spark.master=local[2]",',
            '    "model.hyperparameters.maxIter=10",',
            '    "compare.bootstrap_samples=0",',
            '    "compare.hyperparameters={random_forest: {numTrees: 5, maxDepth: 3}}",',
            "]",
        ]
    )
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    print(f"notebook cells: {_cell_seconds(nb)}")

    def outputs(marker: str) -> list[dict]:
        (cell,) = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
        return cell.outputs

    # the report's figures were displayed, the leaderboard has both algorithms, the plan matched Spark
    assert sum("image/png" in o.get("data", {}) for o in outputs("figures = re.findall")) >= 2
    board = "".join(o.get("data", {}).get("text/plain", "") for o in outputs("board = compare("))
    assert "logistic_regression" in board and "random_forest" in board
    assert "the NumPy plan gives Spark's predictions" in "".join(
        o.get("text", "") for o in outputs("assert numpy_pred == spark_pred")
    )
    assert (tmp_path / "mlflow.db").is_file() and not (NOTEBOOK.parent / "mlflow.db").exists()
