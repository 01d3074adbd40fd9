#!/usr/bin/env bash
# Runs the v3 study's grids in the order PROTOCOL.md lists them; a rerun resumes (completed trials are skipped).
# Start it in the background: setsid nohup scripts/run_v3_study.sh > /tmp/v3.log 2>&1 &
# The primary grids take one wave and its look each in turn, the grid with the fewest looks first (round r trains
# the grids with fewer than r looks; at most 7 looks each: after 3, 5, ..., 15 pairs), so every grid reaches its
# next look before any grid its last, also after a restart; then the descriptive regime (a).
# To stop it (a session ending): kill -TERM -- -PGID (its process group); the running trials checkpoint at their next
# step, as under preemption, and the next start resumes them from there.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=reports/results/cpu-v3/runs
PROTOCOL=reports/results/cpu-v3/protocol.yaml
launch() { .venv/bin/unihetero sweep launch "$1" --preset cpu --backend local --workers 2 --runs-dir "$RUNS" "${@:2}"; }
looks() { if [[ -f "$RUNS/looks/$1__cpu.jsonl" ]]; then wc -l < "$RUNS/looks/$1__cpu.jsonl"; else echo 0; fi; }
for round in 1 2 3 4 5 6 7; do
  for grid in v3_targets_contrastive v3_targets_self_distill v3_data_scaling v3_masking; do
    if (( $(looks "$grid") < round )); then
      launch "$grid" --until-decided "$PROTOCOL" --waves 1
    fi
  done
done
launch v3_targets_scratch
