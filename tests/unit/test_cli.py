"""CLI behaviour that needs no Spark: bad config fails fast, with the key path and allowed values."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sparkpipe.cli import main


def _write(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("model:\n  algoritm: gbt\n", ["model.algoritm", "unknown key", "algorithm"]),
        ("data:\n  validation_split: lots\n", ["data.validation_split", "lots"]),
        (
            "model:\n  algorithm: lightgbm\n",
            ["model.algorithm", "lightgbm", "logistic_regression", "random_forest"],
        ),
        (
            "model:\n  algorithm: random_forest\n  hyperparameters: {numTree: 10}\n",
            ["model.hyperparameters.numTree", "numTrees"],
        ),
        ("spark:\n  master: localhost\n", ["spark.master", "local[*]"]),
        ("model: [1, 2\n", ["not valid YAML", "line"]),
    ],
    ids=["unknown-key", "wrong-type", "unknown-algorithm", "bad-param", "bad-master", "bad-yaml"],
)
def test_bad_config_exits_2_with_key_path(tmp_path, capsys, yaml_text, expected):
    path = _write(tmp_path, yaml_text)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.replace("\n", " ")
    for needle in expected:
        assert needle in err, f"{needle!r} missing from: {err}"


def test_bad_config_fails_before_spark_starts(tmp_path):
    """In a fresh interpreter: validation errors never start a JVM."""
    path = _write(tmp_path, "model:\n  algorithm: random_forest\n  hyperparameters: {maxDepth: ten}\n")
    code = textwrap.dedent(f"""
        import sys
        from sparkpipe.cli import main
        try:
            main(["run", "--config", {str(path)!r}])
        except SystemExit as e:
            from pyspark import SparkContext
            assert SparkContext._active_spark_context is None, "a SparkContext was started"
            assert "pyspark.java_gateway" not in sys.modules or SparkContext._gateway is None
            sys.exit(e.code)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "model.hyperparameters.maxDepth" in proc.stderr


def test_missing_config_file_names_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", str(tmp_path / "nope.yaml")])
    assert exc.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_validate_command_accepts_shipped_configs(capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "config"
    configs = [root / "pipeline_config.yaml", *sorted((root / "examples").glob("*.yaml"))]
    assert len(configs) >= 6
    for cfg in configs:
        main(["validate", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert out.count("valid") == len(configs)


def test_set_override_changes_the_algorithm(tmp_path, capsys):
    path = _write(tmp_path, "model:\n  algorithm: logistic_regression\n")
    main(["validate", "--config", str(path), "--set", "model.algorithm=gbt"])
    assert "gbt" in capsys.readouterr().out


def test_spark_out_of_memory_is_a_one_line_error_naming_the_setting():
    from sparkpipe.errors import explain_spark_failure

    class Py4JJavaError(Exception):
        pass

    try:
        try:
            raise Py4JJavaError(
                "An error occurred while calling o1089.collectToPython.\n: org.apache.spark.SparkException: "
                "Job aborted ... java.lang.OutOfMemoryError: Java heap space"
            )
        except Py4JJavaError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        local = explain_spark_failure(exc, {"spark.master": "local[*]", "spark.driver.memory": "1g"})
        cluster = explain_spark_failure(
            exc, {"spark.master": "spark://h:7077", "spark.executor.memory": "2g"}
        )
    assert local is not None and "spark.driver_memory (now 1g" in str(local)
    assert cluster is not None and "spark.executor_memory (now 2g)" in str(cluster)
    assert explain_spark_failure(ValueError("java.lang.IllegalArgumentException: nope")) is None


def test_cli_prints_the_memory_error_without_a_traceback(monkeypatch, capsys):
    import sparkpipe.cli as cli

    def boom(*args, **kwargs):
        raise RuntimeError("Job aborted: java.lang.OutOfMemoryError: Java heap space")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as exc:
        cli.main(["run"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "ran out of memory" in err and "spark.driver_memory" in err and "Traceback" not in err


def _leaf_commands():
    import typer

    from sparkpipe.cli import app

    def walk(cmd, path):
        if getattr(cmd, "commands", None):  # a group
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app), []))


# the --set example of each command names a section the command reads
SET_SECTIONS = {
    "run": "model.",
    "train": "model.",
    "compare": "compare.",
    "evaluate": "mlflow.",
    "predict": "spark.",
    "recommend": "mlflow.",
    "stream": "spark.",
    "validate": "features.",
    "serve": "deployment.",
    "data generate": "spark.",
    "models list": "mlflow.",
    "models promote": "mlflow.",
    "models rollback": "mlflow.",
    "models history": "mlflow.",
    "monitor drift": "deployment.",
}


def test_every_command_help_shows_an_example_and_a_fitting_set_key(capsys):
    commands = _leaf_commands()
    names = {" ".join(path) for path, _ in commands}
    assert {"run", "validate", "serve", "data generate", "models list", "cluster start"} <= names
    for path, cmd in commands:
        try:
            main([*path, "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        text = " ".join(capsys.readouterr().out.split())  # unwrap rich's line breaks
        name = " ".join(path)
        assert f"Example: sparkpipe {name}" in text, f"{name} --help has no example:\n{text}"
        set_help = [p.help for p in cmd.params if p.name == "set_"]
        if set_help:  # (the rendered panel wraps lines inside its box: read the option's own help)
            assert f"e.g. --set {SET_SECTIONS[name]}" in set_help[0], f"{name}: {set_help[0]}"
            assert "--set" in text
