#!/usr/bin/env bash
# EMR bootstrap action (every node): Python 3.11 and the sparkpipe wheel given as $1 (an s3:// URI).
# The cluster's own Spark runs the jobs: spark-submit puts EMR's pyspark first on the Python path.
set -euo pipefail
wheel_uri="$1"
sudo dnf install -y -q python3.11 python3.11-pip
tmp=$(mktemp -d)
aws s3 cp "$wheel_uri" "$tmp/"
sudo python3.11 -m pip install --quiet "$tmp"/*.whl
python3.11 -c "import sparkpipe.scoring"
