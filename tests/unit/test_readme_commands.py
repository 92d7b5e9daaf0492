"""The README's command lines are real: every ``sparkpipe ...`` line in its shell blocks (and in the
example configs' comments) parses against the CLI, and the cluster section names a spark-class that
exists (the one inside the pyspark package), not the broken ``.venv/bin/spark-class``."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from sparkpipe.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _shell_lines(text: str) -> list[str]:
    lines = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        lines += [ln.strip() for ln in joined.splitlines() if ln.strip().startswith("sparkpipe ")]
    return lines


def _config_comment_lines() -> list[str]:
    found = []
    for path in sorted((ROOT / "config").rglob("*.yaml")):
        for ln in path.read_text().splitlines():
            # an indented command in a comment; a trailing "(remark)" after two spaces is prose
            m = re.match(r"#\s{2,}(sparkpipe \S.*?)(\s{2,}\(.*\))?$", ln.strip())
            if m:
                found.append(m.group(1))
    return found


def _parse(line: str) -> None:
    """Parse ``line`` as the CLI would, without running the command (unknown options, missing
    arguments and bad values raise)."""
    args = shlex.split(line, comments=True)[1:]
    cmd = typer.main.get_command(app)
    path = ["sparkpipe"]
    while getattr(cmd, "commands", None):
        assert args, f"{line!r} names no subcommand of {' '.join(path)}"
        name, args = args[0], args[1:]
        assert name in cmd.commands, f"{line!r}: no command {name!r} under {' '.join(path)}"
        cmd, path = cmd.commands[name], [*path, name]
    cmd.make_context(" ".join(path), list(args))


COMMANDS = _shell_lines(README) + _config_comment_lines()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 15
    assert any(c.startswith("sparkpipe cluster start") for c in COMMANDS)
    assert any(c.startswith("sparkpipe cluster stop") for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_parses(line):
    _parse(line)


def test_a_wrong_command_line_is_caught():
    with pytest.raises(Exception, match=r"no-such-option|No such option"):
        _parse("sparkpipe cluster start --no-such-option 3")


def test_cluster_section_names_the_spark_class_that_works():
    import pyspark

    section = README[README.index("### Run on a local Spark cluster") :]
    section = section[: section.index("\n## ")]
    assert "sparkpipe cluster start" in section and "sparkpipe cluster stop" in section
    works = Path(pyspark.__file__).parent / "bin" / "spark-class"
    assert works.is_file()
    assert "site-packages/pyspark/bin/spark-class" in section
    # the broken script is only ever mentioned as the one that fails, never in a command to run
    for line in _shell_lines(section):
        assert "spark-class" not in line or "pyspark/bin/spark-class" in line
    assert re.search(r"`\.venv/bin/spark-class`[^.]*fails", section)
