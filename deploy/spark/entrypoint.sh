#!/usr/bin/env bash
# Entrypoint of the train image. Spark on Kubernetes starts executor pods from the driver's image with
# the single argument "executor" and the settings in SPARK_* variables (the contract of the entrypoint
# Spark's own images use): run the executor backend from the pip-installed Spark. Anything else is a
# command (sparkpipe run, spark-submit, spark-class ...), run as given.
set -euo pipefail

if [ "${1:-}" = "executor" ]; then
  shift
  java_opts=()
  # SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ...: the executor's JVM options, in order
  while IFS= read -r name; do
    java_opts+=("${!name}")
  done < <(compgen -v SPARK_JAVA_OPT_ | sort -t_ -k4 -n)
  classpath="${SPARK_HOME}/jars/*"
  [ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && classpath="${classpath}:${SPARK_EXTRA_CLASSPATH}"
  [ -n "${SPARK_CLASSPATH:-}" ] && classpath="${SPARK_CLASSPATH}:${classpath}"
  exec tini -s -- java "${java_opts[@]}" \
    -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
    -cp "${classpath}" \
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
    --driver-url "${SPARK_DRIVER_URL}" \
    --executor-id "${SPARK_EXECUTOR_ID}" \
    --cores "${SPARK_EXECUTOR_CORES}" \
    --app-id "${SPARK_APPLICATION_ID}" \
    --hostname "${SPARK_EXECUTOR_POD_IP}" \
    --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
    --podName "${SPARK_EXECUTOR_POD_NAME:-}" \
    "$@"
fi

exec tini -s -- "$@"
