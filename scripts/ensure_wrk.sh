#!/usr/bin/env bash
# The serving benchmark drives concurrency with wrk (a C load generator: a Python client would eat the
# CPU the server needs on a small machine). Install it with apt-get when running as root; otherwise say
# how. Without wrk the benchmark still runs, with its Python client, and says so in its results.
set -uo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "wrk not found; installing it with apt-get ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null && command -v wrk >/dev/null && exit 0
fi
echo "warning: wrk is not installed ('sudo apt-get install -y wrk', 'brew install wrk');" \
  "the benchmark falls back to a Python client, which understates throughput on small machines." >&2
exit 0
