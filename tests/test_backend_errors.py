"""A backend's reason for a trial it could not run is kept for later `sweep status` calls, and only while nothing
has run that trial since."""

import os
import threading
import time

import sweeps.backend_errors as backend_errors
from study.runstore import RunStore
from sweeps.backend_errors import read_errors, record_errors, with_backend_errors
from sweeps.spec import expand, load_spec
from sweeps.status import collect
from tests.grid_specs import write_grid_spec


def test_a_reason_is_kept_until_a_later_launch_or_run_supersedes_it(tmp_path):
    spec = load_spec(str(write_grid_spec(tmp_path, "seeds: [0, 1]\n")), "smoke")
    trials, runs = expand(spec), tmp_path / "runs"
    never_started, ran_since = trials
    records = [{"run_dir": str(runs / t.run_id), "outcome": "error", "reason": f"job of {t.run_id} failed"}
               for t in trials]
    record_errors(runs, spec, trials, records, "slurm")
    reasons = [s.reason for s in with_backend_errors(collect(trials, runs), runs, spec)]
    assert reasons == [f"slurm backend: job of {t.run_id} failed" for t in trials]

    store = RunStore(runs / ran_since.run_id)  # another grid's launch (runs are shared) started it afterwards
    store.write_status("pending")
    later = time.time() + 5
    os.utime(runs / ran_since.run_id / "status.json", (later, later))
    states = with_backend_errors(collect(trials, runs), runs, spec)
    assert [s.reason for s in states] == [reasons[0], ""]

    record_errors(runs, spec, [never_started], [], "slurm")  # a relaunch of it with no error clears its entry only
    assert list(read_errors(runs, spec)) == [ran_since.run_id]


def test_launches_at_once_keep_each_others_entries(tmp_path, monkeypatch):
    """Two launches of one grid record their errors at the same moment: the file's read-modify-write is serialised,
    so the entries of both survive (without the lock each would read the empty file and the later write win)."""
    spec = load_spec(str(write_grid_spec(tmp_path, "seeds: [0, 1]\n")), "smoke")
    trials, runs = expand(spec), tmp_path / "runs"
    read = backend_errors.read_errors

    def slow_read(*args):
        body = read(*args)
        time.sleep(0.3)  # both launches would read before either writes
        return body

    monkeypatch.setattr(backend_errors, "read_errors", slow_read)
    launches = [threading.Thread(target=record_errors, args=(
        runs, spec, [t], [{"run_dir": str(runs / t.run_id), "outcome": "error", "reason": "no node"}], "slurm"))
        for t in trials]
    for launch in launches:
        launch.start()
    for launch in launches:
        launch.join()
    assert sorted(read_errors(runs, spec)) == sorted(t.run_id for t in trials)
