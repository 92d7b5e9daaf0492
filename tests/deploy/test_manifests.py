"""Static checks of the deployment files (no container engine, cluster or cloud account needed).

* ``docker-compose.yml`` against the Compose specification (the JSON schema check-jsonschema ships),
  ``k8s/`` rendered per overlay and each object against Kubernetes' own schemas
  (kubernetes-validate), ``terraform/`` parsed (python-hcl2) and formatted (``terraform fmt`` where the
  binary is), every YAML file through yamllint.
* What they reference exists: Dockerfile targets and the files they copy, the ``sparkpipe`` commands and
  their config files, the metrics the Grafana dashboard plots, the overlays and targets the README's
  Deploy section names, the Terraform variables and files.
* The images' contract: the ``serve`` target has no JVM and runs as a non-root user with a health check;
  ``train`` has Java 17. Versions come from ``pyproject.toml``.

All of it runs in well under a second (``kubectl kustomize`` about 0.1 s per overlay).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from sparkpipe.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
README = (ROOT / "README.md").read_text()
OVERLAYS = sorted(p.parent for p in (ROOT / "k8s" / "overlays").glob("*/kustomization.yaml"))
K8S_VERSION = "1.30.0"
YAML_FILES = sorted(
    [
        ROOT / "docker-compose.yml",
        ROOT / ".yamllint.yaml",
        *(ROOT / "k8s").rglob("*.yaml"),
        *(ROOT / "deploy").rglob("*.yml"),
        ROOT / "config" / "examples" / "compose_cluster.yaml",
        ROOT / "config" / "examples" / "emr.yaml",
    ]
)


# ----------------------------------------------------------------------------- helpers
def _stages() -> dict[str, str]:
    """``{target: its Dockerfile text}`` for every ``FROM ... AS target`` stage."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", DOCKERFILE, flags=re.M | re.I)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _parse_cli(argv: list[str]) -> None:
    """Parse ``sparkpipe ARGV`` as the CLI would, without running it."""
    cmd = typer.main.get_command(app)
    args = list(argv)
    while getattr(cmd, "commands", None):
        assert args, f"sparkpipe {argv} names no subcommand"
        name, args = args[0], args[1:]
        assert name in cmd.commands, f"sparkpipe has no command {name!r} ({argv})"
        cmd = cmd.commands[name]
    cmd.make_context("sparkpipe", args)


def _config_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config":
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def _check_config(path: Path, env: dict[str, str] | None = None) -> None:
    """The pipeline config loads and passes sparkpipe's own checks (no Spark started)."""
    from sparkpipe.config import load_config

    mp = pytest.MonkeyPatch()
    for k, v in (env or {}).items():
        mp.setenv(k, v)
    try:
        load_config(path)
    finally:
        mp.undo()


def _rendered(overlay: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its built-in kustomize) is not installed: overlays not rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


# ----------------------------------------------------------------------------- yamllint
def test_yamllint():
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    conf = YamlLintConfig(file=str(ROOT / ".yamllint.yaml"))
    problems = [
        f"{p.relative_to(ROOT)}:{e.line}: {e.desc}"
        for p in YAML_FILES
        for e in linter.run(p.read_text(), conf, str(p))
    ]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- Dockerfile
def test_dockerfile_targets_and_what_they_copy():
    stages = _stages()
    assert {"serve", "train", "mlflow"} <= set(stages)
    for src in re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+?)\s+\S+\s*$", DOCKERFILE, flags=re.M):
        for item in src.split():
            assert (ROOT / item).exists(), f"Dockerfile copies {item}, which is not in the repository"
    for item in re.findall(r"COPY\s+--from=(\S+)", DOCKERFILE):
        assert item in stages, item
    # nothing the build copies is excluded by .dockerignore
    ignored = (ROOT / ".dockerignore").read_text().split()
    for kept in ("pyproject.toml", "README.md", "src", "config", "deploy"):
        assert kept not in ignored and f"/{kept}" not in ignored


def test_python_and_pins_come_from_the_project():
    """The base image's Python is the one pyproject.toml requires; every pin is read from it at build
    time (the image installs the same pyspark and mlflow as ``pip install -e .``)."""
    required = PYPROJECT["project"]["requires-python"]  # ">=3.11"
    minimum = required.removeprefix(">=")
    assert re.search(rf"^ARG PYTHON_IMAGE=python:{re.escape(minimum)}-slim-bookworm$", DOCKERFILE, re.M)
    assert 'tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]' in DOCKERFILE
    deps = PYPROJECT["project"]["dependencies"]
    assert any(d.startswith("pyspark==") for d in deps) and any(d.startswith("mlflow==") for d in deps)
    assert "python3.11/site-packages/pyspark" in _stages()["train"]  # SPARK_HOME of that Python


def test_serve_image_has_no_jvm_runs_as_non_root_with_a_health_check():
    serve = _stages()["serve"]
    assert not re.search(r"openjdk|default-jre|temurin|\bjre\b|apt-get install", serve, re.I)
    assert "! command -v java" in serve  # the build fails if a JVM came in
    assert re.search(r"^USER\s+10001\s*$", serve, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/health", serve, re.M)
    entry = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", serve, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])\s*$", serve, re.M).group(1))
    assert entry == ["sparkpipe"]
    _parse_cli(cmd)
    assert cmd[0] == "serve" and (ROOT / _config_arg(cmd)).is_file()
    # the serve requirements leave out Spark and the trainers (tests/deploy/test_tracking_server.py
    # serves with these modules, and those mlflow-skinny lacks, unimportable and no java on PATH)
    assert serve_excluded() >= {"pyspark", "xgboost"}


def serve_excluded() -> set[str]:
    """The distributions the serve image does not install (the Dockerfile's ``SERVE_EXCLUDE``)."""
    found = re.search(r"^SERVE_EXCLUDE = (\{.*\})$", DOCKERFILE, re.M)
    assert found, "Dockerfile lost SERVE_EXCLUDE"
    return set(json.loads(found.group(1).replace("'", '"').replace("{", "[").replace("}", "]")))


NOT_IN_MLFLOW_SKINNY = {"sqlalchemy", "alembic", "flask", "sklearn", "graphene", "gunicorn"}
"""Modules full ``mlflow`` brings and ``mlflow-skinny`` (the serve image's) does not."""


def serve_missing_modules() -> set[str]:
    """Top-level modules a process in the serve image cannot import."""
    return serve_excluded() | {"py4j"} | NOT_IN_MLFLOW_SKINNY


def _requirements(tmp_path: Path) -> dict[str, list[str]]:
    """The Dockerfile's requirements step (its Python heredoc), run on the project's pyproject.toml."""
    code = re.search(r"python - <<'PY'\n(.*?)\nPY\n", DOCKERFILE, re.S).group(1)
    code = code.replace("/dist/", f"{tmp_path}/").replace(
        'open("pyproject.toml"', f"open({str(ROOT / 'pyproject.toml')!r}"
    )
    exec(compile(code, "Dockerfile", "exec"), {})
    return {k: (tmp_path / f"requirements-{k}.txt").read_text().split("\n")[:-1] for k in ("serve", "train")}


def test_image_requirements_are_the_project_pins(tmp_path):
    reqs = _requirements(tmp_path)
    deps = PYPROJECT["project"]["dependencies"]
    assert reqs["train"] == deps
    pins = {d.split("==")[0]: d.split("==")[1] for d in deps if "==" in d}
    assert f"mlflow-skinny=={pins['mlflow']}" in reqs["serve"]
    names = {re.split(r"[<>=\[;]", d)[0] for d in reqs["serve"]}
    assert not names & (serve_excluded() | {"mlflow"}), names
    assert names | serve_excluded() | {"mlflow"} == {re.split(r"[<>=\[;]", d)[0] for d in deps} | {
        "mlflow-skinny"
    }


def test_train_image_has_java_17_and_runs_the_pipeline():
    train = _stages()["train"]
    assert "openjdk-17-jre-headless" in train and re.search(r"^USER\s+10001\s*$", train, re.M)
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])\s*$", train, re.M).group(1))
    assert cmd[0] == "sparkpipe"
    _parse_cli(cmd[1:])
    _check_config(ROOT / _config_arg(cmd))


def test_train_entrypoint_runs_commands_and_spark_executors(tmp_path):
    """The train image's entrypoint: a command runs as given; ``executor`` (how Spark on Kubernetes
    starts executor pods from the driver's image) runs the executor backend with Spark's variables."""
    import zipfile

    import pyspark

    train = _stages()["train"]
    assert json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", train, re.M).group(1)) == [
        "sparkpipe-entrypoint"
    ]
    assert "COPY deploy/spark/entrypoint.sh /usr/local/bin/sparkpipe-entrypoint" in train
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "tini").write_text('#!/bin/bash\n[ "$1" = -s ] && shift\n[ "$1" = -- ] && shift\nexec "$@"\n')
    (stubs / "java").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    script = str(ROOT / "deploy" / "spark" / "entrypoint.sh")
    env = {"PATH": f"{stubs}:/usr/bin:/bin"}
    run = subprocess.run([script, "echo", "a command"], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and run.stdout == "a command\n", run.stderr
    env |= {
        "SPARK_HOME": "/spark", "SPARK_EXECUTOR_MEMORY": "2g", "SPARK_DRIVER_URL": "spark://driver:7078",
        "SPARK_EXECUTOR_ID": "3", "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-1",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.3", "SPARK_EXECUTOR_POD_NAME": "pod-3",
        "SPARK_JAVA_OPT_10": "-Dk=10", "SPARK_JAVA_OPT_0": "-Dk=0", "SPARK_JAVA_OPT_2": "-Dk=2",
    }  # fmt: skip
    run = subprocess.run([script, "executor"], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    args = run.stdout.splitlines()
    backend = "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
    assert args[:7] == ["-Dk=0", "-Dk=2", "-Dk=10", "-Xms2g", "-Xmx2g", "-cp", "/spark/jars/*"], args
    assert args[7] == backend and args[args.index("--driver-url") + 1] == "spark://driver:7078"
    assert args[args.index("--hostname") + 1] == "10.0.0.3" and args[args.index("--executor-id") + 1] == "3"
    # the class is in the Spark that pyspark ships (the image's SPARK_HOME)
    (jar,) = (Path(pyspark.__file__).parent / "jars").glob("spark-kubernetes_*.jar")
    with zipfile.ZipFile(jar) as z:
        assert backend.replace(".", "/") + ".class" in z.namelist()


# ----------------------------------------------------------------------------- Compose
def test_compose_file_matches_the_compose_specification():
    import check_jsonschema
    import jsonschema

    spec_path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(spec_path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert not errors, "\n".join(errors)


def test_compose_references_exist():
    services = COMPOSE["services"]
    assert {"spark-master", "spark-worker-1", "spark-worker-2", "mlflow", "postgres", "minio", "api"} <= set(
        services
    )
    assert {"prometheus", "grafana", "trainer"} <= set(services)
    stages = _stages()
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            assert build["target"] in stages, (name, build)
            assert svc["image"] == f"sparkpipe:{build['target']}", name
        else:
            image = svc["image"]
            assert not image.startswith("sparkpipe:") and re.search(r":[\w.-]*\d", image), (
                f"{name}: third-party images are pinned to a version ({image})"
            )
        deps = svc.get("depends_on", [])
        assert set(deps) <= set(services), (name, deps)
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, not in the repository"
            else:
                assert source in COMPOSE["volumes"], (name, source)
        command = svc.get("command")
        if isinstance(command, list) and command and command[0] == "sparkpipe":
            _parse_cli(command[1:])
            _check_config(ROOT / _config_arg(command), {"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
        if isinstance(command, list) and command and command[0] == "spark-class":
            import pyspark

            assert (Path(pyspark.__file__).parent / "bin" / "spark-class").is_file()
            assert command[1].startswith("org.apache.spark.deploy.")
    # the API image's own command serves; the environment points it at the stack's MLflow
    api = services["api"]
    assert api["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "SPARKPIPE_API_KEY" in api["environment"] and api["read_only"] is True
    master = services["spark-master"]["command"]
    for worker in ("spark-worker-1", "spark-worker-2"):
        command = services[worker]["command"]
        assert f"spark://spark-master:{master[master.index('--port') + 1]}" in command
        assert command[command.index("--work-dir") + 1].startswith("/tmp/")  # writable by user 10001
    # Prometheus scrapes the API service on its port
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["api:8000"]
    ds = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_cluster_config_points_at_the_stack(monkeypatch):
    from sparkpipe.config import load_config

    # the file's default, as in the stack (MLflow's set_tracking_uri exports the variable in-process)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config(ROOT / "config" / "examples" / "compose_cluster.yaml")
    assert cfg.spark.master == "spark://spark-master:7077"
    assert cfg.mlflow.tracking_uri == "http://mlflow:5000"
    trainer = COMPOSE["services"]["trainer"]
    assert (
        cfg.spark.conf["spark.driver.host"]
        == trainer["hostname"]
        == trainer["environment"]["SPARK_DRIVER_HOST"]
    )
    assert cfg.data.output_path.startswith("/shared/")  # the volume the driver and workers share
    assert all(
        "spark-shared:/shared" in COMPOSE["services"][s]["volumes"] for s in ("spark-worker-1", "trainer")
    )


def test_grafana_dashboard_plots_metrics_the_service_exports():
    from sparkpipe.serving.metrics import ServiceMetrics

    families = {m.name for m in ServiceMetrics().registry.collect()}
    dash = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "sparkpipe.json").read_text())
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("latency", "throughput", "variants", "drift"):
        assert topic in titles, topic
    for panel in dash["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"\bsparkpipe_\w+", target["expr"]):
                base = re.sub(r"_(total|bucket|count|sum|created)$", "", metric)
                assert base in families, f"{panel['title']}: {metric} is not exported ({sorted(families)})"
    provider = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "sparkpipe.yml").read_text()
    )
    mounts = COMPOSE["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts


# ----------------------------------------------------------------------------- Kubernetes
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.name for p in OVERLAYS])
def test_overlay_renders_to_valid_kubernetes_objects(overlay):
    import kubernetes_validate

    docs = _rendered(overlay)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Job",
        "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim",
    } <= kinds  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    dep = by_kind[("Deployment", "sparkpipe-api")]
    (api,) = _containers(dep)
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["resources"]["requests"] and api["resources"]["limits"]
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    secret = next(e for e in api["env"] if e["name"] == "SPARKPIPE_API_KEY")
    assert secret["valueFrom"]["secretKeyRef"]["name"] == "sparkpipe-api-key"
    assert api["image"].endswith("serve")
    _parse_cli(api["args"])
    # the config file the args name is the ConfigMap's, mounted where they say
    mounts = {m["name"]: m["mountPath"] for m in api["volumeMounts"]}
    assert _config_arg(api["args"]) == f"{mounts['config']}/pipeline_config.yaml"
    # every writable path the image uses is a volume (the root filesystem is read-only)
    serve = _stages()["serve"]
    for var in ("SPARKPIPE_MODEL_CACHE_DIR", "SPARKPIPE_JOBS_DIR"):
        path = re.search(rf"{var}=(\S+)", serve).group(1)
        assert path.startswith(mounts["state"] + "/"), (var, path)
    assert mounts["tmp"] == "/tmp"
    # the ConfigMap (name with kustomize's content hash) is the one the pod mounts
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    config_map = by_kind[("ConfigMap", volumes["config"]["configMap"]["name"])]
    assert set(config_map["data"]) == {"pipeline_config.yaml"}
    hpa = by_kind[("HorizontalPodAutoscaler", "sparkpipe-api")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sparkpipe-api"
    assert hpa["spec"]["minReplicas"] <= dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    # training: spark-submit on Kubernetes, executors from the driver's own image
    job = by_kind[("Job", "sparkpipe-train")]
    (driver,) = _containers(job)
    assert driver["command"] == ["spark-submit"] and driver["image"].endswith("train")
    args = driver["args"]
    assert any(a.startswith("--master=k8s://") for a in args)
    env = {e["name"]: e.get("value") for e in driver["env"]}
    assert env["TRAIN_IMAGE"] == driver["image"]
    script = next(a for a in args if a.endswith(".py"))
    assert script == "/usr/local/lib/python3.11/site-packages/sparkpipe/__main__.py"
    assert (ROOT / "src" / "sparkpipe" / "__main__.py").is_file()
    _parse_cli(args[args.index(script) + 1 :])
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "sparkpipe-spark"


def test_kubernetes_base_objects_are_valid_without_kubectl():
    """Each base file on its own (the check that still runs where kubectl is not installed)."""
    import kubernetes_validate

    base = ROOT / "k8s" / "base"
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    for name in kust["resources"]:
        for doc in yaml.safe_load_all((base / name).read_text()):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    for gen in kust["configMapGenerator"]:
        for f in gen.get("files", []):
            assert (base / f).is_file()
    _check_config(base / "pipeline_config.yaml", {"MLFLOW_TRACKING_URI": "http://mlflow:5000"})


# ----------------------------------------------------------------------------- Terraform
def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of names and string values: drop them."""
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _terraform() -> dict[str, dict[str, Any]]:
    import hcl2

    out = {}
    for path in sorted((ROOT / "terraform").glob("*.tf")):
        with path.open() as fh:
            out[path.name] = _unquote(hcl2.load(fh))
    return out


def test_terraform_parses_and_references_what_it_declares():
    tf = _terraform()
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= set(tf)
    declared = {name for f in tf.values() for v in f.get("variable", []) for name in v}
    text = "\n".join(p.read_text() for p in (ROOT / "terraform").glob("*.tf"))
    used = set(re.findall(r"\bvar\.(\w+)", text))
    assert used <= declared, used - declared
    resources = {
        (kind, name)
        for f in tf.values()
        for r in f.get("resource", [])
        for kind, v in r.items()
        for name in v
    }
    for kind in ("aws_emr_cluster", "aws_s3_bucket", "aws_iam_role", "aws_iam_instance_profile"):
        assert any(k == kind for k, _ in resources), kind
    for ref_kind, ref_name in re.findall(r"\b(aws_\w+)\.(\w+)\.", text):
        if not text.count(f'data "{ref_kind}" "{ref_name}"'):
            assert (ref_kind, ref_name) in resources, (ref_kind, ref_name)
    # the buckets: data, models, MLflow artifacts
    assert set(re.findall(r"(\w+)\s*=\s*\"\$\{var\.name\}-(\w+)-", text)) >= {
        ("data", "data"), ("models", "models"), ("mlflow", "mlflow")
    }  # fmt: skip
    # the release: Spark 3.5+ (emr-7) at least, and the default passes the variable's own validation
    (release,) = [
        v["release_label"] for f in tf.values() for v in f.get("variable", []) if "release_label" in v
    ]
    assert int(re.match(r"emr-(\d+)\.", release["default"]).group(1)) >= 7
    outputs = {name for f in tf.values() for o in f.get("output", []) for name in o}
    assert {"cluster_id", "models_bucket", "mlflow_artifacts_bucket", "data_bucket"} <= outputs


def test_terraform_files_and_step_exist():
    tf = _terraform()
    variables = {k: v for f in tf.values() for var in f.get("variable", []) for k, v in var.items()}
    terraform_dir = ROOT / "terraform"
    config = (terraform_dir / variables["pipeline_config_path"]["default"]).resolve()
    assert config.is_file()
    _check_config(config, {"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    # the wheel `pip wheel --no-deps -w dist .` writes
    version = PYPROJECT["project"]["version"]
    assert variables["wheel_path"]["default"] == f"../dist/sparkpipe-{version}-py3-none-any.whl"
    bootstrap = terraform_dir / "bootstrap" / "install_sparkpipe.sh"
    assert bootstrap.is_file() and "python3.11" in bootstrap.read_text()
    assert subprocess.run(["bash", "-n", str(bootstrap)], check=False).returncode == 0
    main = (terraform_dir / "main.tf").read_text()
    assert "sparkpipe.__main__" in main and "run --config" in main and "spark-submit --master yarn" in main
    outputs = (terraform_dir / "outputs.tf").read_text()
    assert "emr_steps_json" in outputs and "command-runner.jar" in outputs
    _parse_cli(["run", "--config", str(config)])


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    # `terraform validate` needs `terraform init`, which downloads the AWS provider: not possible offline
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff"],
        cwd=ROOT / "terraform",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ----------------------------------------------------------------------------- README
def _deploy_section() -> str:
    found = re.search(r"^## Deploy\n(.*?)(?=^## )", README, flags=re.M | re.S)
    assert found, "README has no '## Deploy' section"
    return found.group(1)


def _deploy_commands() -> list[list[str]]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", _deploy_section(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                out.append(shlex.split(line, comments=True))
    return out


def test_readme_deploy_section_uses_the_files():
    cmds = _deploy_commands()
    tools = {c[0] for c in cmds}
    assert {"docker", "kubectl", "terraform", "aws"} <= tools, tools
    stages = _stages()
    services = COMPOSE["services"]
    seen = set()
    for c in cmds:
        if c[:2] == ["docker", "build"]:
            assert c[c.index("--target") + 1] in stages, c
            seen.add("build")
        elif c[:2] == ["docker", "compose"]:
            if "run" in c:
                assert c[-1] in services or c[c.index("run") + 1 :][-1] in services, c
            seen.add("compose")
        elif c[:2] == ["kubectl", "apply"]:
            target = ROOT / c[c.index("-k") + 1]
            assert target in OVERLAYS, c
            seen.add("kubectl")
        elif c[0] == "terraform":
            chdir = next(a.split("=", 1)[1] for a in c if a.startswith("-chdir="))
            assert (ROOT / chdir / "main.tf").is_file(), c
            seen.add("terraform")
        elif c[:3] == ["aws", "emr", "add-steps"]:
            seen.add("aws")
    assert seen >= {"build", "compose", "kubectl", "terraform", "aws"}, seen
    # the Terraform outputs the commands read exist
    outputs = {name for f in _terraform().values() for o in f.get("output", []) for name in o}
    wanted = set(re.findall(r"terraform -chdir=terraform output -raw (\w+)", _deploy_section()))
    assert wanted and wanted <= outputs, wanted - outputs


def test_readme_examples_test_does_not_run_the_deploy_commands():
    """tests/serving/test_readme_examples.py runs the README's ``curl`` and ``sparkpipe`` lines: the
    Deploy section has none (its commands need Docker, a cluster or an AWS account)."""
    for c in _deploy_commands():
        assert c[0] not in ("curl", "sparkpipe"), c
