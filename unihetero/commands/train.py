"""`unihetero train` and `unihetero eval`: one run of the study."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from study.config import load_config
from study.errors import UserError
from study.runstore import open_run
from study.summary import summarise_run


def register(sub: argparse._SubParsersAction) -> None:
    """The `train`, `summary` and `eval` commands' arguments."""
    p = sub.add_parser("train", help="create or resume one training run; prints its directory")
    p.add_argument("config", nargs="?", help="preset name or YAML file (omit with --resume)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. objective.target=semantic_input")
    p.add_argument("--runs-dir", default="runs", help="where run directories live (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in this directory")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--summary", action="store_true", help="print the run's summary when it ends")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config; run nothing")
    p.set_defaults(func=run_train)
    s = sub.add_parser("summary", help="print a run's status and final metrics against floor and chance")
    s.add_argument("run_dir")
    s.set_defaults(func=run_summary)
    e = sub.add_parser("eval", help="re-evaluate a run (a VLM or an encoder-pretraining stage) from its last "
                                    "checkpoint")
    e.add_argument("run_dir")
    e.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    """`unihetero train CONFIG` (or --resume RUN): create or resume one run; print its directory."""
    from study.train import TrainingFailed, train

    if args.resume:
        store = open_run(args.resume, "--resume")
        cfg, run_dir = store.config(), store.path
    else:
        if not args.config:
            raise UserError("train: give a CONFIG (preset or YAML file) or --resume RUN_DIR")
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.runs_dir) / cfg.run_id()
    if args.dry_run:
        print(run_dir)
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    try:
        path = train(cfg, run_dir, quiet=args.quiet)
    except TrainingFailed as e:
        print(f"run failed: {e} ({run_dir})", file=sys.stderr)
        return 1
    print(path)
    if args.summary:
        print(summarise_run(str(path)))
    return 0


def run_summary(args: argparse.Namespace) -> int:
    """`unihetero summary RUN`: the run's status and final metrics against floor and chance."""
    print(summarise_run(str(open_run(args.run_dir, "summary").path)))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """`unihetero eval RUN`: evaluate a run (a VLM or an encoder-pretraining stage) at its last checkpoint, appended to
    its eval.jsonl."""
    from study.evaluate import evaluate
    from study.pretrain.evaluate import evaluate_stage
    from study.rebuild import load_trained

    run = load_trained(args.run_dir)
    cfg, step = run.inputs.resolved, run.step
    record = {"step": step, "samples_seen": step * cfg.train.batch_size, "final": True, "reevaluated": True}
    if cfg.objective.task == "vlm":
        record.update(evaluate(run.model, cfg, step, final=True, world=run.inputs.world, run_dir=run.store.path))
    else:
        record.update(evaluate_stage(run.model, cfg, run.inputs.world, step))
    run.store.append("eval.jsonl", record)
    print(json.dumps(record, indent=1))
    return 0
