"""A trial on Ray Train workers reports each evaluation to Tune as the run writes it (sweeps/backends/ray_train.py):
the tailing of `eval.jsonl`, with Tune's report replaced by a list."""

from __future__ import annotations

import threading
import time

from study.runstore import RunStore
from sweeps.backends import ray_train


def test_each_evaluation_is_reported_once_in_order_as_it_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_train, "POLL_S", 0.01)
    run = tmp_path / "run"
    run.mkdir()
    store, done, reported = RunStore(run), threading.Event(), []
    reporter = threading.Thread(target=ray_train.report_evaluations, args=(run, done, reported.append))
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
