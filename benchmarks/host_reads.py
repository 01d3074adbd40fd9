"""Host reads per training step: tensor reads (item, tolist, float, int, bool, index) made by the toolkit's own
code, and by all code (torch's CPU AdamW reads its CPU step counters), on steps between log records and at log
steps. A count, not a time: the figure does not depend on how loaded the machine is.

    python -m benchmarks.host_reads      -> benchmarks/results/host_reads-<machine>.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import study.loop as loop_module
from benchmarks.common import write_result
from study.config import load_config
from study.train import train

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")
STUDY = str(Path(loop_module.__file__).parent)
LOG_EVERY, STEPS = 5, 20


def main() -> dict:
    cfg = load_config("tiny", ["objective.target=semantic_input+pixel", "masking.distribution=truncnorm",
                               f"train.log_every={LOG_EVERY}", f"train.samples_seen={16 * STEPS}",
                               "train.checkpoint_every=0", "eval.every=0", "train.threads=1"])
    reads, last, per_step = {"toolkit": 0, "all": 0}, {"toolkit": 0, "all": 0}, {}
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    real_log = loop_module.Loop._log

    def log(self: loop_module.Loop, acc: dict, done: int, *args: object) -> float:  # each step, after its reads
        per_step[done] = {k: reads[k] - last[k] for k in reads}
        last.update(reads)
        return real_log(self, acc, done, *args)

    for name, real in originals.items():
        def counted(self: torch.Tensor, *args: object, _real: Callable = real, **kwargs: object) -> object:
            reads["all"] += 1
            reads["toolkit"] += sys._getframe(1).f_code.co_filename.startswith(STUDY)
            return _real(self, *args, **kwargs)

        setattr(torch.Tensor, name, counted)
    loop_module.Loop._log = log
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp) / "run", quiet=True)
    finally:
        for name, real in originals.items():
            setattr(torch.Tensor, name, real)
        loop_module.Loop._log = real_log
    between = [per_step[s] for s in range(2, STEPS + 1) if s % LOG_EVERY]  # step 1 also holds set-up and step 0
    logs = [per_step[s] for s in range(LOG_EVERY, STEPS + 1, LOG_EVERY)]
    result = {"config": "tiny, semantic_input+pixel, truncnorm masking, 1 process, CPU", "log_every": LOG_EVERY,
              **{f"{who}_reads_per_step_between_logs": sum(r[who] for r in between) / len(between)
                 for who in reads},
              **{f"{who}_reads_per_log_step": sum(r[who] for r in logs) / len(logs) for who in reads}}
    print(json.dumps(result, indent=1))
    write_result("host_reads", result)
    return result


if __name__ == "__main__":
    main()
