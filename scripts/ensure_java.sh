#!/usr/bin/env bash
# Spark 4 needs Java 17+. Install it with apt-get when running as root; otherwise say how.
set -euo pipefail
major() {
  local java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  command -v "$java" >/dev/null 2>&1 || { echo 0; return; }
  "$java" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1") ? v[2] : v[1]; exit}'
}
v=$(major)
if [ "${v:-0}" -ge 17 ] 2>/dev/null; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Java 17 not found (found: ${v:-none}); installing openjdk-17-jre-headless with apt-get ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  v=$(major)
  [ "${v:-0}" -ge 17 ] && { echo "Java $v installed."; exit 0; }
fi
cat >&2 <<MSG
error: Spark 4 needs Java 17 or newer (found: ${v:-none}).
Install it, e.g. 'sudo apt-get install -y openjdk-17-jre-headless' on Debian/Ubuntu,
'brew install openjdk@17' on macOS, or set JAVA_HOME to a JDK 17+ installation.
MSG
exit 1
