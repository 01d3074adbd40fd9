"""Run `study.train.train` and SIGKILL this process at a chosen event (fault injection for tests).

usage: python -m tests.reliability.kill_driver RUN_DIR EVENT:STEP[:SIGNAL] [override ...]
events: step (after STEP optimizer steps, mid log interval, of a VLM run), signal (during step STEP + 1, counted
from 1, of any run, encoder-pretraining stages included: the loop's fault seam), checkpoint (halfway through writing the
checkpoint of STEP), eval (at the start of the evaluation of STEP), metrics (halfway through appending
the metrics record of STEP), none (run to the end). SIGNAL (default KILL) is the signal sent, e.g. USR1 or
TERM to ask for a preemption checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys

import study.checkpoint as checkpoint
import study.runstore as runstore
import study.vlm as vlm
from study.config import load_config
from study.loop import Faults, inject
from study.train import train

SIGNAL = [signal.SIGKILL]


def die() -> None:
    os.kill(os.getpid(), SIGNAL[0])


def arm(event: str, step: int) -> None:
    if event == "step":
        real_losses, calls = vlm.loss_terms, [0]

        def losses(*args, **kwargs):
            calls[0] += 1
            if calls[0] > step:
                die()
            return real_losses(*args, **kwargs)

        # the counter starts at the resumed step: the driver is told the absolute step
        calls[0] = -10**9
        vlm.loss_terms = losses
        real_stream = vlm.training_stream

        def stream(cfg, world, start, *a, **k):
            calls[0] = start
            return real_stream(cfg, world, start, *a, **k)

        vlm.training_stream = stream
    elif event == "checkpoint":
        real_save = checkpoint.torch.save

        def save(state, f):
            if state.get("step") == step:
                f.write(b"PK\x03\x04 half a checkpoint")
                f.flush()
                die()
            real_save(state, f)

        checkpoint.torch.save = save
    elif event == "eval":
        real_eval = vlm.evaluate

        def evaluate(model, cfg, at, *args, **kwargs):
            if at == step:
                die()
            return real_eval(model, cfg, at, *args, **kwargs)

        vlm.evaluate = evaluate
    elif event == "metrics":
        real_append = runstore.RunStore.append

        def append(self, name, record):
            if name == "metrics.jsonl" and record.get("step") == step:
                with open(self.path / name, "a") as f:
                    f.write(f'{{"step": {step}, "loss/tot')
                die()
            real_append(self, name, record)

        runstore.RunStore.append = append


def main() -> None:
    run_dir, spec, *overrides = sys.argv[1:]
    event, _, rest = spec.partition(":")
    step, _, name = rest.partition(":")
    if name:
        SIGNAL[0] = signal.Signals[f"SIG{name}"]
    if event == "signal":
        with inject(Faults(signal_at_step=(int(step) + 1, SIGNAL[0]))):
            train(load_config("tiny", overrides), run_dir, quiet=True)
        return
    if event != "none":
        arm(event, int(step))
    train(load_config("tiny", overrides), run_dir, quiet=True)


if __name__ == "__main__":
    main()
