"""Run several training jobs one after another in each rank of a torchrun launch (a test helper).

    torchrun --standalone --nproc_per_node 2 -m tests.rank_jobs JOBS.json

JOBS.json is a list of {"config": preset or YAML, "overrides": [...], "run_dir": ...}; every rank trains each job
in turn, in one process group joined once (torchrun's agent store does not take a second rendezvous), and rank 0
appends the job's run directory to JOBS.json.done once it has finished, so a test can tell how far a launch got when
it hangs or fails.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from study.config import load_config
from study.train import train


def main(jobs_file: str) -> None:
    jobs = json.loads(Path(jobs_file).read_text())
    dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=1))
    for job in jobs:
        train(load_config(job["config"], job["overrides"]), job["run_dir"], quiet=True)
        if os.environ.get("RANK", "0") == "0":
            with open(f"{jobs_file}.done", "a") as done:
                done.write(job["run_dir"] + "\n")
    dist.barrier()
    dist.destroy_process_group()
    sys.stderr.flush()


if __name__ == "__main__":
    main(sys.argv[1])
