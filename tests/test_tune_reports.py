"""What a Ray trial tells Ray without a cluster: each evaluation reported to Tune as the run writes it (the tailing of
`eval.jsonl`, with Tune's report replaced by a list), and the resources its Ray Train workers ask for."""

from __future__ import annotations

import threading
import time

from study.runstore import RunStore
from sweeps.backends import raytune


def test_each_evaluation_is_reported_once_in_order_as_it_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(raytune, "POLL_S", 0.01)
    run = tmp_path / "run"
    run.mkdir()
    store, done, reported = RunStore(run), threading.Event(), []
    reporter = threading.Thread(target=raytune.report_evaluations, args=(run, done, reported.append))
    reporter.start()
    store.append("eval.jsonl", {"step": 0, "zs_acc": 0.25, "note": "floor"})
    deadline = time.monotonic() + 10
    while not reported:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert reported == [{"eval/step": 0, "eval/zs_acc": 0.25}]  # reported while the run goes on
    store.append("eval.jsonl", {"step": 8, "zs_acc": 0.5})
    store.append("eval.jsonl", {"step": 16, "zs_acc": 0.75})
    done.set()  # the workers finished right after the last evaluation: it is reported too
    reporter.join(timeout=10)
    assert [r["eval/step"] for r in reported] == [0, 8, 16]


def test_workers_ask_ray_train_for_the_resources_given_per_worker():
    from sweeps.backends.ray_train import scaling

    cpu = scaling(2, 1.0, 0.0)
    assert (cpu.num_workers, cpu.use_gpu, cpu.resources_per_worker) == (2, False, {"CPU": 1.0, "GPU": 0.0})
    gpu = scaling(32, 8.0, 1.0)
    assert (gpu.num_workers, gpu.use_gpu, gpu.resources_per_worker) == (32, True, {"CPU": 8.0, "GPU": 1.0})
