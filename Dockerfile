# syntax=docker/dockerfile:1
# sparkpipe images, one file, three targets:
#   docker build --target serve -t sparkpipe:serve .    the prediction service: Python only, no JVM
#   docker build --target train -t sparkpipe:train .    JRE 17 + PySpark: sparkpipe run, spark-submit,
#                                                        and the Spark master/workers of docker-compose.yml
#   docker build --target mlflow -t sparkpipe:mlflow .  MLflow tracking server (Postgres + S3 stores)
# Versions come from the project's own files: pyspark, mlflow and every other pin are read from
# pyproject.toml at build time; Python is the version pyproject.toml requires.
# Debian bookworm: its openjdk-17 is the JRE Spark 4 runs on (trixie ships 21 only).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- wheel
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --no-cache-dir --wheel-dir /dist . \
 && python - <<'PY'
# the pinned requirements, split: all of them (train) and those the JVM-free server imports (serve)
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
# the service scores with the NumPy plan: it never imports Spark, the trainers or delta-rs; it reads the
# registry with MLflow's client, so mlflow-skinny in the same version (no server, no scikit-learn)
SERVE_EXCLUDE = {"pyspark", "xgboost", "optuna", "deltalake"}
name = lambda d: d.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()
serve = [d.replace("mlflow", "mlflow-skinny", 1) if name(d) == "mlflow" else d for d in deps if name(d) not in SERVE_EXCLUDE]
open("/dist/requirements-train.txt", "w").write("\n".join(deps) + "\n")
open("/dist/requirements-serve.txt", "w").write("\n".join(serve) + "\n")
PY

# --------------------------------------------------------------------------- serve
FROM ${PYTHON_IMAGE} AS serve
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /dist /dist
RUN pip install -r /dist/requirements-serve.txt \
 && pip install --no-deps /dist/sparkpipe-*.whl \
 && python -m compileall -q "$(python -c 'import sparkpipe, os; print(os.path.dirname(sparkpipe.__file__))')" \
 && rm -rf /dist \
 && ! command -v java \
 && useradd --uid 10001 --create-home --home-dir /app sparkpipe \
 && install -d -o 10001 -g 10001 /app/state
WORKDIR /app
COPY --chown=10001:10001 config/pipeline_config.yaml config/pipeline_config.yaml
USER 10001
# every writable path under /app/state (a volume): model cache, job records, prediction log
ENV SPARKPIPE_HOST=0.0.0.0 \
    SPARKPIPE_PORT=8000 \
    SPARKPIPE_MODEL_CACHE_DIR=/app/state/models \
    SPARKPIPE_JOBS_DIR=/app/state/jobs \
    MPLCONFIGDIR=/tmp/matplotlib
VOLUME ["/app/state"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"]
ENTRYPOINT ["sparkpipe"]
CMD ["serve", "--config", "config/pipeline_config.yaml"]

# --------------------------------------------------------------------------- train
FROM ${PYTHON_IMAGE} AS train
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# procps: Spark's daemon scripts use ps; tini reaps the JVM's children
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && rm -rf /var/lib/apt/lists/* \
 && java -version
COPY --from=wheel /dist /dist
RUN pip install -r /dist/requirements-train.txt \
 && pip install --no-deps /dist/sparkpipe-*.whl \
 && rm -rf /dist \
 && useradd --uid 10001 --create-home --home-dir /app sparkpipe \
 && install -d -o 10001 -g 10001 /shared   # scratch shared by driver and executors (docker-compose.yml)
# spark-submit, spark-class and the daemons run from the pip-installed pyspark (the same Spark as the driver)
ENV SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=python \
    PATH=/usr/local/lib/python3.11/site-packages/pyspark/bin:$PATH
# Spark on Kubernetes starts executors from this image with the argument "executor"; other commands pass
COPY deploy/spark/entrypoint.sh /usr/local/bin/sparkpipe-entrypoint
WORKDIR /app
COPY --chown=10001:10001 config config
USER 10001
ENTRYPOINT ["sparkpipe-entrypoint"]
CMD ["sparkpipe", "run", "--config", "config/pipeline_config.yaml"]

# --------------------------------------------------------------------------- mlflow
FROM ${PYTHON_IMAGE} AS mlflow
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml /tmp/pyproject.toml
# the tracking server in the version the project pins, with the Postgres driver and the S3 client
RUN pip install "$(python -c 'import tomllib; print(next(d for d in tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"] if d.startswith("mlflow")))')" \
        psycopg2-binary boto3 \
 && rm /tmp/pyproject.toml \
 && useradd --uid 10001 --create-home mlflow
USER 10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
