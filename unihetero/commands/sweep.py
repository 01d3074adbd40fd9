"""`unihetero sweep plan|launch|status`: grids of runs on this machine, a Ray cluster or Slurm."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from study.errors import UserError
from sweeps.spec import SCALES, GridSpec, Trial, load_spec, pipeline
from sweeps.status import axis_text, collect, counts_line, format_table, status_table, table_axes
from unihetero.commands.argtypes import nonnegative_float, positive_float, positive_int

if TYPE_CHECKING:
    from sweeps.backends.local import LocalOptions
    from sweeps.backends.raytune import RayOptions
    from sweeps.backends.slurm import SlurmOptions


def _grid_args(p: argparse.ArgumentParser, runs_dir: bool) -> None:
    p.add_argument("grid", help="grid name (sweeps/grids) or path to a grid spec YAML")
    p.add_argument("--preset", required=True, choices=SCALES, help="scale of the grid")
    if runs_dir:
        p.add_argument("--runs-dir", default="runs", help="where run directories live (default: runs)")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """--backend and every backend's options (shared by `sweep launch` and `reproduce`)."""
    p.add_argument("--backend", choices=("local", "ray", "slurm"), default="local")
    p.add_argument("--retry-failed", action="store_true", help="rerun failed trials too")
    p.add_argument("--workers", type=positive_int, default=1, help="local: processes (1: this one)")
    ray = p.add_argument_group("ray")
    ray.add_argument("--ray-address", help="HOST:PORT of a running Ray cluster (default: start a local one)")
    ray.add_argument("--ray-timeout", type=positive_float, default=30.0,
                     help="seconds to wait for the cluster at --ray-address before failing (default 30)")
    ray.add_argument("--max-concurrent", type=positive_int, help="most trials at once")
    ray.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (default 2)")
    ray.add_argument("--cpus-per-trial", type=nonnegative_float,
                     help="CPUs of a trial whose ranks share one node (default 1)")
    ray.add_argument("--gpus-per-trial", type=nonnegative_float,
                     help="GPUs of a trial whose ranks share one node, one rank per GPU (default 0)")
    ray.add_argument("--workers-per-trial", type=positive_int,
                     help="run each trial on this many Ray Train workers (its ranks), placed across nodes")
    ray.add_argument("--cpus-per-worker", type=nonnegative_float, help="with --workers-per-trial (default 1)")
    ray.add_argument("--gpus-per-worker", type=nonnegative_float, help="with --workers-per-trial (default 0)")
    slurm = p.add_argument_group("slurm")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--qos")
    slurm.add_argument("--time-min", type=positive_int, default=60, help="time limit per job in minutes")
    slurm.add_argument("--cpus-per-task", type=positive_int,
                       help="CPUs per task (default: 1 + the grid's largest data.workers)")
    slurm.add_argument("--gpus-per-node", type=int, default=0)
    slurm.add_argument("--nodes", type=positive_int, default=1)
    slurm.add_argument("--tasks-per-node", type=positive_int, default=1)
    slurm.add_argument("--mem-gb", type=nonnegative_float,
                       help="memory per node in GB (default: 4 per CPU of its tasks; 0: the partition's default)")
    slurm.add_argument("--array-parallelism", type=positive_int, default=64, help="most array jobs at once")
    slurm.add_argument("--no-wait", action="store_true", help="submit and return (watch with sweep status)")


def register(sub: argparse._SubParsersAction) -> None:
    """The `sweep` commands' arguments."""
    p = sub.add_parser("sweep", help="plan, launch and watch grids of runs")
    actions = p.add_subparsers(dest="sweep_command", required=True, parser_class=type(p))
    plan = actions.add_parser("plan", help="print the trial table (axes, run ids, FLOPs); runs nothing")
    _grid_args(plan, runs_dir=False)
    plan.add_argument("--runs-dir", help="also name the runs there that trials would train exactly as")
    cost = plan.add_argument_group("cost", "what each trial and the grid will cost (sweeps/cost.py)")
    cost.add_argument("--cost", action="store_true", help="samples, tokens, FLOPs, device-hours and peak memory "
                      "per rank of each trial, and the totals")
    cost.add_argument("--gpu-type", default="h100", choices=("h100", "h200", "a100", "cpu"),
                      help="the device the cost is for (default h100)")
    cost.add_argument("--mfu", type=positive_float, help="model FLOPs utilisation (default: the last measured on "
                      "that device type in benchmarks/results/, else 0.35, said to be assumed)")
    cost.add_argument("--ranks", type=positive_int, default=1, help="ranks per trial (default 1)")
    cost.add_argument("--json", action="store_true", help="the cost as JSON on stdout (implies --cost)")
    plan.set_defaults(func=run_plan)

    launch = actions.add_parser("launch", help="run every trial not yet completed; relaunch resumes")
    _grid_args(launch, runs_dir=True)
    add_backend_args(launch)
    launch.add_argument("--until-decided", metavar="PROTOCOL",
                        help="a protocol.yaml: the grid's seeds are the first wave; after each wave its planned "
                             "comparisons are tested and seeds added to the arms of open ones, up to the cap")
    launch.add_argument("--max-seeds", type=positive_int, help="with --until-decided: a lower seed cap")
    launch.add_argument("--waves", type=positive_int,
                        help="with --until-decided: stop after this many looks (the next wave is recorded, not "
                             "trained; a relaunch goes on)")
    launch.set_defaults(func=run_launch)

    status = actions.add_parser("status", help="counts and a table: completed, running, failed, pending")
    _grid_args(status, runs_dir=True)
    status.add_argument("--until-decided", metavar="PROTOCOL",
                        help="the protocol a launch --until-decided used: its looks, and the trials its waves added")
    status.set_defaults(func=run_status)


def _flops(trial: Trial) -> float:
    from study.model.flops import encoder_stage_flops_per_sample, train_flops_per_sample
    from study.model.memory import caption_length
    from sweeps.cost import plannable

    cfg = plannable(trial.config)  # a full preset's placeholder backbones: their vendored configs
    per_trial = train_flops_per_sample if cfg.objective.task == "vlm" else encoder_stage_flops_per_sample
    per_sample = per_trial(cfg, caption_length(cfg))
    return per_sample * cfg.steps * cfg.train.batch_size


def run_plan(args: argparse.Namespace) -> int:
    """`unihetero sweep plan GRID`: print the trial table, copies named; runs nothing."""
    from sweeps.dedupe import changed_keys, representatives

    spec = load_spec(args.grid, args.preset)
    trials = pipeline(spec)
    if args.cost or args.json:
        return print_costs(spec, trials, args)
    axis_keys = table_axes(trials)
    staged = any(t.stage or t.upstream for t in trials)
    copies = representatives(trials, Path(args.runs_dir) if args.runs_dir else None)
    flops = [0.0 if t.run_id in copies else _flops(t) for t in trials]
    rows = [[str(t.index), *([t.stage or "-"] if staged else []), *(axis_text(t, k) for k in axis_keys), t.run_id,
             *([" ".join(t.upstream) or "-"] if staged else []), *([copies.get(t.run_id, "-")] if copies else []),
             str(t.config.steps), f"{f:.3g}"]
            for t, f in zip(trials, flops, strict=True)]
    print(f"grid {spec.name} (preset {spec.scale}, base {spec.base_preset}): {len(trials)} trials, "
          f"{sum(t.config.steps for t in trials if t.run_id not in copies)} steps, {sum(flops):.3g} training FLOPs")
    header = ["#", *(["stage"] if staged else []), *axis_keys, "run_id", *(["upstream"] if staged else []),
              *(["trains as"] if copies else []), "steps", "FLOPs"]
    print(format_table(rows, header))
    for t in trials:
        if t.run_id in copies:
            keys = changed_keys(t.config)
            print(f"trial {t.index} ({t.run_id}) trains exactly as {copies[t.run_id]}: {', '.join(keys)} "
                  f"{'has' if len(keys) == 1 else 'have'} no effect in it; it trains once")
    return 0


def print_costs(spec: GridSpec, trials: list[Trial], args: argparse.Namespace) -> int:
    """`sweep plan --cost`: a row per trial, then the totals (or all of it as JSON)."""
    import json

    from sweeps.cost import device, mfu_for, parameters, plan_costs

    model = next((t.config for t in reversed(trials) if t.config.objective.task == "vlm"), trials[-1].config)
    mfu, source = mfu_for(args.gpu_type, args.mfu, parameters(model))
    dev = device(args.gpu_type)
    costs = plan_costs(trials, args.gpu_type, mfu, args.ranks)
    total = {"samples": sum(c.samples for c in costs), "tokens": sum(c.tokens for c in costs),
             "train_flops": sum(c.train_flops for c in costs), "eval_flops": sum(c.eval_flops for c in costs),
             "device_hours": sum(c.device_hours for c in costs),
             "trials_that_do_not_fit": sum(c.fits is False for c in costs)}
    if args.json:
        print(json.dumps({"grid": spec.name, "preset": spec.scale, "device": dev.name, "bf16_peak": dev.bf16_peak,
                          "memory_gib": dev.memory / 2**30, "mfu": mfu, "mfu_source": source, "ranks": args.ranks,
                          "trials": [c.as_dict() | {"axes": t.axes} for c, t in zip(costs, trials, strict=True)],
                          "total": total}, indent=1, default=str))
        return 0
    print(f"grid {spec.name} (preset {spec.scale}) on {dev.name}, {args.ranks} rank(s) per trial: bf16 peak "
          f"{dev.bf16_peak:.3g} FLOP/s, MFU {mfu:.3g} [{source}], {dev.memory / 2**30:.0f} GiB per rank")
    rows = [[str(c.index), c.run_id, f"{c.samples:.3g}", f"{c.tokens:.3g}", f"{c.train_flops:.3g}",
             f"{c.eval_flops:.3g}", f"{c.device_hours:.3g}",
             f"{c.memory.peak / 2**30:.3g}" if c.memory else "-",
             {True: "yes", False: "NO", None: "-"}[c.fits], c.advice or "-"] for c in costs]
    print(format_table(rows, ["#", "run_id", "samples", "tokens", "train FLOPs", "eval FLOPs", "device-h",
                              "peak GiB/rank", "fits", "to make it fit"]))
    print(f"total: {total['samples']:.3g} samples, {total['tokens']:.3g} tokens, {total['train_flops']:.3g} training "
          f"+ {total['eval_flops']:.3g} evaluation FLOPs, {total['device_hours']:.3g} device-hours; "
          f"{total['trials_that_do_not_fit']} trial(s) do not fit")
    return 0


def ray_resources(args: argparse.Namespace) -> dict[str, float]:
    """A Ray trial's resources: for its one node (--cpus/--gpus-per-trial), or per Ray Train worker
    (--workers-per-trial with --cpus/--gpus-per-worker); mixing the two is a UserError naming the option."""
    per_trial = {"cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial}
    per_worker = {"cpus_per_worker": args.cpus_per_worker, "gpus_per_worker": args.gpus_per_worker}
    if args.workers_per_trial:
        given = [k for k, v in per_trial.items() if v is not None]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')}: a trial of --workers-per-trial Ray Train workers asks "
                            "for resources per worker: use --cpus-per-worker and --gpus-per-worker")
        return {"workers_per_trial": args.workers_per_trial,
                **{k: v for k, v in per_worker.items() if v is not None}}
    given = [k for k, v in per_worker.items() if v is not None]
    if given:
        raise UserError(f"--{given[0].replace('_', '-')} needs --workers-per-trial (a trial whose ranks share one "
                        "node asks with --cpus-per-trial and --gpus-per-trial)")
    return {k: v for k, v in per_trial.items() if v is not None}


def backend_options(args: argparse.Namespace, spec: GridSpec) -> LocalOptions | RayOptions | SlurmOptions:
    """The chosen backend's options from the command line; `name` identifies the grid's jobs."""
    name = f"{spec.name}__{spec.scale}"
    if args.backend == "local":
        from sweeps.backends.local import LocalOptions

        return LocalOptions(workers=args.workers)
    if args.backend == "ray":
        from sweeps.backends.raytune import RayOptions

        return RayOptions(address=args.ray_address, connect_timeout_s=args.ray_timeout,
                          max_concurrent=args.max_concurrent, max_failures=args.max_failures, name=name,
                          **ray_resources(args))
    from sweeps.backends.slurm import SlurmOptions, sized_resources

    cpus, mem_gb = sized_resources([t.config for t in pipeline(spec)], args.cpus_per_task, args.mem_gb,
                                   args.tasks_per_node)
    return SlurmOptions(partition=args.partition, account=args.account, qos=args.qos, time_min=args.time_min,
                        cpus_per_task=cpus, gpus_per_node=args.gpus_per_node, nodes=args.nodes,
                        tasks_per_node=args.tasks_per_node, mem_gb=mem_gb,
                        array_parallelism=args.array_parallelism, name=name, wait=not args.no_wait)


def run_launch(args: argparse.Namespace) -> int:
    """`unihetero sweep launch GRID`: run the grid's unfinished trials on a backend (in waves with --until-decided)."""
    from sweeps.launch import launch_grid

    spec = load_spec(args.grid, args.preset)
    for option in ("max_seeds", "waves"):
        if getattr(args, option) and not args.until_decided:
            raise UserError(f"sweep launch --{option.replace('_', '-')}: applies with --until-decided only")
    if args.until_decided:
        from analysis.protocol import load_protocol
        from sweeps.adaptive import launch_until_decided

        states = launch_until_decided(spec, Path(args.runs_dir), load_protocol(args.until_decided), args.backend,
                                      backend_options(args, spec), args.max_seeds, args.retry_failed,
                                      args.waves)
    else:
        states = launch_grid(spec, Path(args.runs_dir), args.backend, backend_options(args, spec), args.retry_failed)
    print(counts_line(states))
    unfinished = [s for s in states if s.state != "completed"]
    if unfinished:
        print(status_table(unfinished))
    submitted_only = args.backend == "slurm" and args.no_wait
    return 0 if submitted_only or not unfinished else 1


def run_status(args: argparse.Namespace) -> int:
    """`unihetero sweep status GRID`: each trial's state, the time left, and the looks with their decisions."""
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs directory '{runs_dir}' does not exist")
    from sweeps.adaptive import decisions_table, looks_file, looks_lines, planned_trials, trials_to_cap
    from sweeps.backend_errors import with_backend_errors
    from sweeps.time_left import time_left_line, to_cap_line

    spec = load_spec(args.grid, args.preset)
    trials = pipeline(spec)
    if args.until_decided:
        from analysis.protocol import load_protocol

        protocol = load_protocol(args.until_decided)
        trials = planned_trials(spec, runs_dir, protocol)
    states = with_backend_errors(collect(trials, runs_dir), runs_dir, spec)
    print(f"grid {spec.name} (preset {spec.scale}): {counts_line(states)}")
    print(status_table(states))
    print(time_left_line(states, runs_dir) + ("; for the waves planned so far (a look may add more)"
                                              if args.until_decided else ""))
    if args.until_decided:
        print(to_cap_line(collect(trials_to_cap(spec, runs_dir, protocol), runs_dir), runs_dir, protocol.cap))
    looks = looks_lines(runs_dir, spec)
    if looks and not args.until_decided:
        print(f"{len(looks)} look(s) of --until-decided in {looks_file(runs_dir, spec)}: give --until-decided "
              "PROTOCOL to list the trials its waves added")
    for line in looks if args.until_decided else looks[-1:]:
        print(line)
    table = decisions_table(runs_dir, spec) if args.until_decided else ""
    if table:
        print(f"each comparison at its latest look:\n{table}")
    return 0
