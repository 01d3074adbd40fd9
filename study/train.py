"""One training run, start to finish or resumed: `train(cfg, run_dir)`, the entry every backend calls.

It prepares the run once (inputs checked, upstream references resolved, world built: study/inputs.py), joins the
ranks, and hands the run to the shared loop (study/loop.py) with its trainee: a VLM (study/vlm.py) or an
encoder-pretraining stage (study/pretrain/run.py). A preemption signal ends it after a checkpoint, for requeue; an
OSError (a full disk, a lost mount) ends it with status failed, the checkpoints written before it untouched.
"""

from __future__ import annotations

import errno
from pathlib import Path

from study import distributed, upstream
from study.config import RunConfig
from study.inputs import prepare
from study.loop import Loop, TrainingFailed, already_complete
from study.preemption import Preempted, Preemption, pass_on
from study.pretrain.run import StageTrainee
from study.runstore import FollowerStore, RunStore
from study.vlm import VLMTrainee

__all__ = ["TrainingFailed", "train"]


def train(cfg: RunConfig, run_dir: Path | str, until_step: int | None = None, quiet: bool = False) -> Path:
    """Run (or resume, or skip if complete) the run of `cfg` in `run_dir`; returns the directory. With `until_step`
    the run stops right after the checkpoint of that step (a segment, resumed by a later call).

    Under torchrun (or any env:// rendezvous) every rank calls this; rank 0 writes the run files.
    An OSError stops the run with status failed and the error as its reason, raised as TrainingFailed; the
    checkpoints written before it are untouched, so a resume continues.
    """
    inputs = prepare(cfg, Path(run_dir).parent)  # a missing input or upstream run fails before anything is written
    ranks, started = distributed.setup(cfg)
    store = RunStore(run_dir) if ranks.main else FollowerStore(run_dir)
    stopped = None
    try:
        with Preemption() as preemption:
            store.init(cfg)
            distributed.barrier(ranks)  # the run directory exists before any rank reads it
            if already_complete(store, cfg):
                return store.path
            if ranks.main:
                upstream.pin(inputs.upstream, store.path)  # the weights it trains on are the ones it started with
            trainee = VLMTrainee(inputs, store, ranks) if cfg.objective.task == "vlm" else \
                StageTrainee(inputs.resolved, inputs.world, store)
            Loop(store, inputs.resolved, ranks, trainee, inputs.upstream.digests).run(preemption, until_step, quiet)
            return store.path
    except Preempted as e:
        stopped = e
    except OSError as e:
        reason = f"stopped by an OS error ({errno.errorcode.get(e.errno or 0, 'no errno')}): {e}"
        if (store.path / "config.yaml").exists():
            try:
                where = {k: v for k, v in store.status().items() if k in ("step", "total_steps")}
                store.write_status("failed", reason=reason, **where)
            except OSError:  # the disk refuses even the status file: the caller still gets the reason
                pass
        raise TrainingFailed(reason) from e
    finally:
        store.close_trackers()
        distributed.teardown(started)
    pass_on(stopped)  # reached only when preempted; does not return
