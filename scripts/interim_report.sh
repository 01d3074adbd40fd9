#!/usr/bin/env bash
# Builds an interim report of a running study from the records of one commit, so that it shows what that commit
# holds (completed runs and looks only; never the partial runs of the checkout) and anyone can rebuild it:
#   scripts/interim_report.sh COMMIT RESULTS_DIR NAME [BOOTSTRAP]
#   e.g. scripts/interim_report.sh 4252f8e reports/results/cpu-v3 interim-2026-12-07 100
# It writes RESULTS_DIR/NAME/ (report.md, report.html, tables/) from `unihetero report RESULTS_DIR/runs --no-figures`
# run on a `git archive` of COMMIT, the code of that commit too (`python -m` there), with this checkout's .venv; an
# existing RESULTS_DIR/NAME is never overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
if (( $# < 3 )); then
  echo "usage: scripts/interim_report.sh COMMIT RESULTS_DIR NAME [BOOTSTRAP]" >&2
  exit 2
fi
commit=$1 results=${2%/} name=$3 bootstrap=${4:-100}
if ! git rev-parse -q --verify "$commit^{commit}" > /dev/null; then
  echo "interim_report: '$commit' is not a commit of this repository" >&2
  exit 2
fi
if [[ -e "$results/$name" ]]; then
  echo "interim_report: $results/$name exists (a committed report is never rebuilt in place: choose another NAME)" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive "$commit" | tar -x -C "$work"
if [[ ! -d "$work/$results/runs" ]]; then
  echo "interim_report: commit $commit has no $results/runs" >&2
  exit 2
fi
ln -s "$PWD/.venv" "$work/.venv"
(cd "$work" && .venv/bin/python -m unihetero report "$results/runs" --out "$results/$name" --no-figures --bootstrap "$bootstrap")
cp -r "$work/$results/$name" "$results/$name"
echo "wrote $results/$name from commit $(git rev-parse --short "$commit")"
