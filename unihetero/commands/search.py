"""`unihetero search`: Optuna over continuous parameters of one arm, pruning on intermediate evals."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from study.errors import UserError
from sweeps.spec import NAME_RE
from unihetero.commands.argtypes import nonnegative_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    """The `search` command's arguments."""
    p = sub.add_parser("search", help="Optuna search over continuous parameters of one arm (resumable)")
    p.add_argument("config", help="preset name or YAML file: the arm to search in")
    p.add_argument("overrides", nargs="*", help="dotted overrides fixing the arm (objective.target=pixel)")
    p.add_argument("--param", action="append", required=True, metavar="KEY=LOW:HIGH[:log]",
                   help="a searched parameter, e.g. train.lr=1e-4:1e-2:log (repeatable)")
    p.add_argument("--metric", default="caption_loss", help="evaluation metric to optimise (eval.jsonl key)")
    p.add_argument("--direction", choices=("minimize", "maximize"),
                   help="default: maximize for *acc* metrics, minimize otherwise")
    p.add_argument("--trials", type=positive_int, default=10, help="finished trials wanted in the study")
    p.add_argument("--eval-every", type=positive_int, default=100, help="steps between evaluations (pruning)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--storage", default="",
                   help="journal file or database URL (default: RUNS_DIR/search/NAME.journal)")
    p.add_argument("--study-name", help="default: derived from the arm, parameters and metric")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--workers", type=positive_int, default=1, help="trials at once")
    p.add_argument("--ray-address")
    p.add_argument("--cpus-per-trial", type=nonnegative_float, default=1.0)
    p.add_argument("--pruner", choices=("median", "none"), default="median")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.set_defaults(func=run_search_command)


def _study_name(args: argparse.Namespace) -> str:
    if args.study_name is not None:
        if not NAME_RE.fullmatch(args.study_name):
            raise UserError(f"--study-name {args.study_name!r}: use [A-Za-z0-9_-], at most 64 characters")
        return args.study_name
    blob = json.dumps([args.config, args.overrides, sorted(args.param), args.metric])
    stem = "".join(c if c.isalnum() else "-" for c in Path(args.config).stem)[:40]
    return f"{stem}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def run_search_command(args: argparse.Namespace) -> int:
    """`unihetero search CONFIG --param ...`: run the Optuna search (resumable)."""
    from sweeps.search import SearchOptions, parse_param, run_search

    direction = args.direction or ("maximize" if "acc" in args.metric else "minimize")
    options = SearchOptions(
        source=args.config, overrides=tuple(args.overrides), params=tuple(parse_param(p) for p in args.param),
        metric=args.metric, direction=direction, trials=args.trials, eval_every=args.eval_every,
        runs_dir=Path(args.runs_dir), storage=args.storage, study_name=_study_name(args),
        backend=args.backend, workers=args.workers, ray_address=args.ray_address,
        cpus_per_trial=args.cpus_per_trial, pruner=args.pruner, seed=args.seed)
    study = run_search(options)
    states = [t.state.name.lower() for t in study.trials]
    print(f"study {options.study_name}: " + ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))))
    try:
        best = study.best_trial
    except ValueError:
        print("no completed trial yet")
        return 1
    print(f"best trial {best.number}: {options.metric}={best.value:.6g} params={best.params} "
          f"run={best.user_attrs.get('run_id')}")
    return 0
