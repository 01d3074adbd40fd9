"""Experiment trackers as optional mirrors of the run store (`train.trackers: [tensorboard, wandb, mlflow]`).

The run store stays the truth: every record it appends to `metrics.jsonl` or `eval.jsonl` is passed on to each
tracker the run names (`study.tracker_sinks`: where each one's points go), and a tracker that fails is reported
once on stderr and dropped, never failing the run. Each tracker gets the resolved config as hyperparameters, the
run id as the run's name, and the grids and arm the run belongs to (from the runs directory's grid membership
files). What each destination has been sent is kept in the run directory (`trackers.json`: per records file, the
last step sent and how many of that step's records; for W&B, whose writes are lazy, what its own transaction log
kept), so a resumed run does not send its redone steps again (exact resume makes them identical) and a replay
sends only what a destination lacks. Each tracker is an optional
extra ("tracking"); a run that names one that is not installed fails before training with one line saying what
to install. `replay` mirrors a run's records in step order (the `unihetero track` command).
"""

from __future__ import annotations

import json
import math
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study.config import RunConfig
from study.errors import UserError
from study.files import atomic_write
from study.tracker_sinks import EVAL_PREFIX, SINKS, Membership, Sink

INSTALL = "pip install -e '.[tracking]'"
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def scalars(record: dict, kind: str) -> tuple[int, dict[str, float]]:
    """The step and the finite numbers of a run-store record, evaluation metrics prefixed with 'eval/'."""
    prefix = EVAL_PREFIX if kind == "eval" else ""
    values = {f"{prefix}{k}": float(v) for k, v in record.items()
              if k not in ("step", "final") and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)}
    return int(record.get("step", 0)), values


def membership(run_dir: Path) -> Membership:
    """Every grid a run is in (from its runs directory's grid membership files) and its arm (from the first); the
    run id as the arm outside any grid."""
    run_id, grids, arm = run_dir.name, [], None
    for path in sorted((run_dir.parent / "grids").glob("*.json")):
        try:
            body = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for trial in body.get("trials", []):
            if trial.get("run_id") == run_id:
                grids.append(str(body.get("grid", path.stem)))
                axes = trial.get("axes", {})
                arm = arm or " · ".join(str(v) for k, v in axes.items() if "." not in k and k != "seed")
                break
    return Membership(tuple(dict.fromkeys(grids)), arm or run_id)


class Mirrored:
    """What each tracker destination has been sent, in `RUN_DIR/trackers.json`, and the run's W&B id (made once,
    kept there: unique per run directory, the same if the directory moves)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "trackers.json"
        try:
            self.state = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.state = {}
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read '{self.path}' ({e.__class__.__name__}); delete it to mirror every record "
                            "again") from None
        self.state.setdefault("sent", {})

    def wandb_id(self) -> str:
        if "wandb_id" not in self.state:
            self.state["wandb_id"] = secrets.token_hex(8)
            self.save()
        return self.state["wandb_id"]

    def is_new(self, destination: str, file: str, step: int, ordinal: int) -> bool:
        """Whether the `ordinal`-th record of `step` in `file` is past what `destination` has been sent."""
        last = self.state["sent"].get(destination, {}).get(file)
        return last is None or (step, ordinal) >= (last["step"], last["records"])

    def sent(self, destination: str, file: str, step: int, ordinal: int) -> None:
        self.state["sent"].setdefault(destination, {})[file] = {"step": step, "records": ordinal + 1}

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.state, indent=1).encode())


def check_installed(names: list[str]) -> None:
    """Fail in one line, before any training, when a named tracker's package is missing."""
    import importlib.util

    missing = [n for n in names if importlib.util.find_spec(MODULES[n]) is None]
    if missing:
        raise UserError(f"config key 'train.trackers': {', '.join(missing)} not installed (install the "
                        f"optional extra: {INSTALL})")


class Trackers:
    """The run's trackers: each record goes to every one still working that has not had it; a failure is reported
    once and that tracker dropped."""

    def __init__(self, cfg: RunConfig, run_dir: Path, names: list[str] | None = None,
                 backlog: Callable[[str], list[dict]] | None = None):
        """`backlog` reads the run store's records so far: each tracker first gets those it lacks (a resumed run's
        steps that a tracker lost when the run was killed, a tracker added on resume, a replay)."""
        names = cfg.train.trackers if names is None else names
        member, self.mirrored = membership(run_dir), Mirrored(run_dir)
        self.sinks: dict[str, Sink] = {}
        self._at: dict[str, tuple[int, int]] = {}  # per file: the step of the last record seen and its ordinal
        wandb_id = self.mirrored.wandb_id() if "wandb" in names else ""
        for name in names:
            self._guard(name, lambda name=name: self.sinks.__setitem__(
                name, SINKS[name](cfg, run_dir, member, wandb_id)))
        for sink in self.sinks.values():
            if sink.kept is not None:
                self.mirrored.state["sent"][sink.destination] = sink.kept
        self.backfilled = self._backfill(backlog) if backlog else 0

    def _backfill(self, records: Callable[[str], list[dict]]) -> int:
        """Send the records each tracker lacks, training and evaluation records merged in step order (a step's
        training record first); returns how many went to at least one tracker."""
        merged = [(r.get("step", 0), order, file, r) for order, file in enumerate(("metrics.jsonl", "eval.jsonl"))
                  for r in records(file)]
        merged.sort(key=lambda item: item[:2])  # stable: a step's re-evaluations stay in the order they were written
        sent = sum(self._mirror(file, r) > 0 for _, _, file, r in merged)
        if sent:
            self.mirrored.save()
        return sent

    def _guard(self, name: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception as e:  # a tracker must never fail the run: the run store has every record
            self.sinks.pop(name, None)
            print(f"tracker {name} failed ({e.__class__.__name__}: {e}); it is dropped for this run, the run store "
                  "keeps every record", file=sys.stderr)

    def record(self, name: str, record: dict) -> None:
        """Mirror one run-store record (`metrics.jsonl` or `eval.jsonl`) to each tracker that lacks it."""
        if self._mirror(name, record):
            self.mirrored.save()

    def _mirror(self, name: str, record: dict) -> int:
        kind = {"metrics.jsonl": "train", "eval.jsonl": "eval"}.get(name)
        if kind is None:
            return 0
        step, values = scalars(record, kind)
        previous, count = self._at.get(name, (None, 0))
        ordinal = count if previous == step else 0
        self._at[name] = (step, ordinal + 1)
        sent = 0
        for sink_name, sink in list(self.sinks.items()):
            if self.mirrored.is_new(sink.destination, name, step, ordinal):
                self._guard(sink_name, lambda sink=sink: sink.log(step, values))
                if sink_name in self.sinks:
                    self.mirrored.sent(sink.destination, name, step, ordinal)
                    sent += 1
        return sent

    def close(self) -> None:
        for sink_name, sink in list(self.sinks.items()):
            self._guard(sink_name, sink.close)
        self.sinks.clear()


def replay(run_dir: Path, names: list[str], records: Callable[[str], list[dict]], cfg: RunConfig) -> int:
    """Mirror a run's records to the named trackers, in step order; returns how many records were sent (a
    destination gets only those it lacks)."""
    trackers = Trackers(cfg, run_dir, names, backlog=records)
    trackers.close()
    return trackers.backfilled
