#!/usr/bin/env bash
# Redraws this folder (report.md and the PNGs) from a fresh run of the default job:
#   bash docs/report/regenerate.sh            # about 14 minutes on 2 CPU cores
# The run goes into a new workdir, runs/base-DATE (or the one given), whose name the report
# shows; the pictures come from its metrics.jsonl and its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
workdir="${1:-runs/base-$(date +%Y%m%d-%H%M)}"
python train.py --config=configs/base.py --workdir="$workdir"
python -m transformer_jax.report --workdir="$workdir" --output=docs/report
python -m transformer_jax.report attention --workdir="$workdir" \
    --text="Could not open file %s" --output=docs/report
