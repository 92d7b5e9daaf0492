"""The package layering (pyproject ``[tool.importlinter]``) and what loading a config may import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    """``lint-imports``: packages import only from the layers below them, scoring never imports pyspark."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=120, check=True)  # fmt: skip
    return set(out.stdout.split())


def test_importing_the_scorer_loads_no_spark():
    mods = _modules_after("import sparkpipe.scoring.compile")
    assert not {m for m in mods if m.startswith(("pyspark", "py4j", "mlflow"))}
