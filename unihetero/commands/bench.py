"""`unihetero bench`: a run's checkpoint evaluated on benchmark files, the results added to its eval.jsonl.

Under torchrun each rank scores its share of every benchmark's rows; rank 0 writes the record. The record is the
run's own evaluation at that step (when it has one) with the `bench/<task>/<metric>` keys added, appended as a
re-evaluation: readers keep a step's last record, so the step's other metrics stay as they were.
"""

from __future__ import annotations

import argparse
import json
import sys

from study.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    """The `bench` command's arguments."""
    p = sub.add_parser("bench", help="evaluate a run's checkpoint on benchmark files (into its eval.jsonl)")
    p.add_argument("run_dir")
    p.add_argument("--task", action="append", required=True, metavar="FILE_OR_DIR",
                   help="a benchmark file or directory (repeatable): .tsv (MMBench), .jsonl, .json (COCO captions), "
                        "an ImageFolder tree or labelled shards")
    p.add_argument("--step", type=int,
                   help="the checkpoint's step (default: the latest; 0: the run's random initialisation, its floor)")
    p.add_argument("--limit", type=int, default=0, help="rows of each benchmark (default 0: all)")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """`unihetero bench RUN --task FILE`: score a run's checkpoint on benchmark files into its eval.jsonl."""
    from study import distributed
    from study.evaluation.bench.run import run_benchmarks
    from study.evaluation.bench.scoring import Shard
    from study.rebuild import load_vlm

    if args.limit < 0:
        raise UserError(f"bench --limit {args.limit}: must be >= 0")
    run = load_vlm(args.run_dir, args.step)
    cfg, step, store = run.inputs.resolved, run.step, run.store
    ranks, started = distributed.setup(cfg)
    try:
        metrics = run_benchmarks(run.model.to(ranks.device), cfg, args.task, args.limit,
                                 Shard(ranks.rank, ranks.world))
    finally:
        distributed.teardown(started)
    if not ranks.main:
        return 0
    captioning = [k.split("/")[1] for k in metrics if k.endswith("/cider")] if args.limit else []
    for task in captioning:
        print(f"note: {task}'s CIDEr-D weighs n-grams by their document frequency (IDF) over the "
              f"{int(metrics[f'bench/{task}/n'])} images of this --limit subset, not over the whole file, so it is "
              "not the full set's CIDEr-D", file=sys.stderr)
    own = [r for r in store.records("eval.jsonl") if r.get("step") == step]
    record = (own[-1] if own else {"step": step, "samples_seen": step * cfg.train.batch_size,
                                   "final": step == cfg.steps}) | metrics | {"reevaluated": True}
    store.append("eval.jsonl", record)
    print(json.dumps({"step": step, **metrics}, indent=1))
    return 0
