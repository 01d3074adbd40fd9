#!/usr/bin/env bash
# Runs the v3 study's grids in the order PROTOCOL.md lists them; a rerun resumes (completed trials are skipped).
# Start it in the background: setsid nohup scripts/run_v3_study.sh > /tmp/v3.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=reports/results/cpu-v3/runs
PROTOCOL=reports/results/cpu-v3/protocol.yaml
launch() { .venv/bin/unihetero sweep launch "$1" --preset cpu --backend local --workers 2 --runs-dir "$RUNS" "${@:2}"; }
for grid in v3_targets_contrastive v3_targets_self_distill v3_data_scaling v3_masking; do
  launch "$grid" --until-decided "$PROTOCOL"
done
launch v3_targets_scratch
