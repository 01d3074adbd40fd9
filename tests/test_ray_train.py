"""Trials on Ray Train workers across nodes (`sweep launch --backend ray --workers-per-trial N`), on a Ray cluster of
two worker nodes made on this machine (`ray.cluster_utils.Cluster`): a head with no CPU holds the Tune trial and Ray
Train's controller (a trial of workers asks for nothing itself), and each worker node has one CPU, so the two
workers of a trial land on different nodes. The run ends at the 1-rank run's evaluations (the invariants issue's
tolerance), also when a worker's node is killed mid-trial and a replacement node joins."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from study.runstore import RunStore
from study.train import train
from sweeps.execute import ATTEMPTS, FAULT_FILE, TrialTask
from tests.conftest import tiny_config
from tests.grid_specs import tune_reports

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]
EVAL_REL = 1e-4  # as tests/test_distributed.py
OVERRIDES = ("train.threads=1", "train.log_every=2", "train.checkpoint_every=4", "eval.every=8",
             "eval.inference_scaling=false", "eval.num_images=6", "eval.probe_images=22", "train.dist_timeout_min=1")


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes, workers
    ray.shutdown()
    nodes.shutdown()


def _launch(cfg, runs: Path, max_failures: int = 3) -> dict:
    from sweeps.backends.raytune import RayOptions, launch

    (record,) = launch([TrialTask(str(runs / cfg.run_id()), cfg.to_dict())],
                       RayOptions(workers_per_trial=2, max_failures=max_failures))
    return record


def _assert_same_final_evaluation(run: Path, reference: Path, record_property) -> None:
    """The final evaluations within the invariants issue's tolerance; both kept as test properties (in pytest's
    --junitxml report: reports/results/ray-multinode/ was made that way)."""
    got, want = RunStore(run).records("eval.jsonl"), RunStore(reference).records("eval.jsonl")
    assert [e["step"] for e in got] == [e["step"] for e in want]
    metrics = {k for k, v in want[-1].items() if isinstance(v, float) and "seconds" not in k}
    assert metrics >= {"caption_loss", "zs_acc", "probe_acc/shape"}
    record_property("final_evaluation", json.dumps({"ray_workers": {k: got[-1][k] for k in sorted(metrics)},
                                                    "one_rank": {k: want[-1][k] for k in sorted(metrics)}}))
    assert {k: got[-1][k] for k in metrics} == pytest.approx({k: want[-1][k] for k in metrics}, rel=EVAL_REL,
                                                             abs=1e-6)


def test_two_workers_on_two_nodes_end_at_the_one_rank_runs_evaluations(cluster, tmp_path, record_property):
    _, workers = cluster
    cfg = tiny_config(*OVERRIDES, "train.samples_seen=256")
    reference = train(cfg, tmp_path / "one" / "run", quiet=True)
    runs = tmp_path / "runs"
    record = _launch(cfg, runs)
    assert record["outcome"] == "ran" and record["state"] == "completed", record
    assert sorted(record["worker_nodes"]) == sorted(w.node_id for w in workers)  # one rank on each node
    record_property("nodes", json.dumps({"ranks": record["worker_nodes"], "workers": [w.node_id for w in workers]}))
    run = runs / cfg.run_id()
    assert RunStore(run).status()["world_size"] == 2 and len(RunStore(run).records(ATTEMPTS)) == 1
    _assert_same_final_evaluation(run, reference, record_property)
    # every evaluation reached Tune as the run wrote it, before the trial's final record
    reported = [r["eval/step"] for r in tune_reports(runs) if "eval/step" in r]
    assert reported == [e["step"] for e in RunStore(run).records("eval.jsonl")] == [0, 8, 16]


def test_a_killed_worker_node_and_a_replacement_resume_the_trial_from_its_checkpoint(cluster, tmp_path,
                                                                                      record_property):
    nodes, workers = cluster
    cfg = tiny_config(*OVERRIDES, "train.samples_seen=1280")
    reference = train(cfg, tmp_path / "one" / "run", quiet=True)
    runs = tmp_path / "runs"
    run = runs / cfg.run_id()
    outcome: dict = {}
    launcher = threading.Thread(target=lambda: outcome.update(_launch(cfg, runs)))
    launcher.start()
    deadline = time.monotonic() + 300
    while not any((run / "checkpoints").glob("step_*")):
        assert time.monotonic() < deadline and launcher.is_alive(), "the trial wrote no checkpoint"
        time.sleep(0.2)
    nodes.remove_node(workers[1], allow_graceful=False)  # a worker's node is lost mid-trial
    replacement = nodes.add_node(num_cpus=1)
    launcher.join(timeout=600)
    assert not launcher.is_alive()
    assert outcome["state"] == "completed", outcome
    attempts = RunStore(run).records(ATTEMPTS)
    assert len(attempts) >= 2 and attempts[-1]["from_step"] > 0  # resumed from a checkpoint, not from scratch
    assert replacement.node_id in outcome["worker_nodes"] and workers[1].node_id not in outcome["worker_nodes"]
    record_property("nodes", json.dumps({"ranks": outcome["worker_nodes"], "killed": workers[1].node_id,
                                         "replacement": replacement.node_id}))
    record_property("attempts", json.dumps([{k: a[k] for k in ("from_state", "from_step")} for a in attempts]))
    _assert_same_final_evaluation(run, reference, record_property)


def test_workers_that_keep_dying_train_one_plus_max_failures_times_and_stay_resumable(cluster, tmp_path):
    """Ray Train's restarts are the trial's retries: once they run out, the trial ends with an error record and the
    run is left to resume; Tune does not start the workers over again ((1 + k) squared attempts)."""
    cfg = tiny_config(*OVERRIDES, "train.samples_seen=256")
    runs = tmp_path / "runs"
    run = runs / cfg.run_id()
    run.mkdir(parents=True)
    stop = threading.Event()

    def every_attempt_dies() -> None:
        """Each attempt consumes the file and dies after its first checkpoint (at step 4, then 8, ...); the file for
        the next one is written once that checkpoint is there, seconds before Ray Train restarts the workers."""
        last = 4
        (run / FAULT_FILE).write_text(str(last))
        while not stop.is_set():
            if not (run / FAULT_FILE).exists() and any((run / "checkpoints").glob(f"step_{last:08d}*")):
                last += 4
                (run / FAULT_FILE).write_text(str(last))
            time.sleep(0.02)

    planter = threading.Thread(target=every_attempt_dies, daemon=True)
    planter.start()
    try:
        record = _launch(cfg, runs, max_failures=1)
    finally:
        stop.set()
        planter.join()
    (run / FAULT_FILE).unlink(missing_ok=True)
    tried = [a["from_step"] for a in RunStore(run).records(ATTEMPTS)]
    assert record["outcome"] == "error" and "Ray Train stopped after 1 restart(s)" in record["reason"], (record, tried)
    assert record["run_dir"] == str(run)  # so the launch's table shows the reason beside the trial
    assert tried == [0, 4]  # 1 + max_failures attempts (before the fix: [0, 4, 8, 12], Tune starting Train over)
    assert RunStore(run).status()["state"] not in ("completed", "failed")
    again = _launch(cfg, runs, max_failures=1)  # a relaunch resumes it
    assert again["state"] == "completed", again
    assert [a["from_step"] for a in RunStore(run).records(ATTEMPTS)][2:] == [8]


@pytest.mark.parametrize(("its_own_copy", "why"), [
    (False, "it cannot write there (No such file or directory)"),
    (True, "this process cannot read what it wrote")])
def test_a_runs_directory_a_node_cannot_see_is_one_line_before_any_trial(tmp_path, its_own_copy, why):
    """A worker node in its own mount namespace, with a tmpfs over the runs directory's parent: the runs directory is
    not there for it, or it is a copy of its own, and the launch stops with one line naming the node and why, writing
    nothing."""
    import os
    import signal
    import subprocess
    import sys

    from ray.cluster_utils import Cluster

    from tests.grid_specs import ray_cli_launch, write_grid_spec

    if os.geteuid() != 0:
        pytest.skip("a private mount namespace needs root")
    shared = tmp_path / "shared"
    shared.mkdir()
    runs = shared / "runs"
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    ray_cli = Path(sys.executable).with_name("ray")
    node = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"mount -t tmpfs tmpfs {shared} && {'mkdir ' + str(runs) if its_own_copy else 'true'} "
                             f"&& exec {ray_cli} start --address {head.address} "
                             "--num-cpus 1 --block"], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        ray.init(address=head.address, log_to_driver=False)
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline and node.poll() is None, "the private node did not join"
            time.sleep(0.5)
        ray.shutdown()
        grid = write_grid_spec(tmp_path, "seeds: [0]\n")
        auth = {k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH")}  # as the head was started
        result = ray_cli_launch(grid, runs, head.address, auth)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: runs directory '{runs}' is not shared with Ray node ")
        assert why in result.stderr
        assert not runs.exists()
    finally:
        ray.shutdown()
        os.killpg(node.pid, signal.SIGKILL)
        head.shutdown()
