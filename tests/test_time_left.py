"""`sweep status`'s time-left estimate prices unfinished trials at the wall seconds per step of the grid's runs
that completed in one attempt, leaves resumed runs out, and prices a trial that would be copied from another run at
nothing; a launch starts each seed's most expensive trial first by the same prices."""

import statistics

import pytest

from study.runstore import RunStore, read_jsonl
from sweeps import time_left
from sweeps.execute import ATTEMPTS, FAULT_FILE
from sweeps.spec import expand, load_spec
from sweeps.status import collect
from sweeps.time_left import estimate, time_left_line
from tests.grid_specs import attempts, launch_argv, run_dirs, write_grid_spec
from unihetero.cli import main


def wall_per_step(run) -> float:
    status = RunStore(run).status()
    return (status["updated_at"] - read_jsonl(run / ATTEMPTS)[0]["at"]) / status["total_steps"]


@pytest.mark.slow
def test_time_left_prices_the_unfinished_trials_at_the_one_attempt_runs_median(tmp_path, capsys):
    grid, runs = write_grid_spec(tmp_path, "seeds: [0, 1, 2]\n", **{"train.samples_seen": 320}), tmp_path / "runs"
    clean_a, clean_b, resumed = run_dirs(grid, runs)
    resumed.mkdir(parents=True)
    (resumed / FAULT_FILE).write_text("10")  # it stops after step 10 and resumes: its wall time spans the gap
    assert main(launch_argv(grid, runs, "--workers", "2")) == 1
    assert main(launch_argv(grid, runs)) == 0
    grid = write_grid_spec(tmp_path, "seeds: [0, 1, 2, 3]\n", **{"train.samples_seen": 320})
    spec = load_spec(str(grid), "smoke")
    states = collect(expand(spec), runs)
    assert [s.state for s in states] == ["completed"] * 3 + ["pending"]
    e = estimate(states, runs)
    steps = expand(spec)[3].config.steps
    assert (e.trials, e.steps, e.measured) == (1, steps, 2)
    assert e.median == pytest.approx(statistics.median([wall_per_step(clean_a), wall_per_step(clean_b)]))
    assert e.seconds == pytest.approx(steps * e.median) and e.seconds > 0
    assert main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    assert "time left: about " in capsys.readouterr().out

    # a trial that trains exactly as another run (caption_on has no effect without masking) costs nothing: a launch
    # copies that run's records
    copies = write_grid_spec(tmp_path, "zip: [{arm: [plain, clean], masking.caption_on: [masked, clean]}]\n"
                             "seeds: [0, 1, 3]\n", **{"train.samples_seen": 320})
    states = collect(expand(load_spec(str(copies), "smoke")), runs)
    assert [s.state for s in states] == ["completed", "completed", "pending"] + ["pending"] * 3
    e = estimate(states, runs)
    assert (e.trials, e.steps, e.measured) == (1, steps, 2)  # plain seed 3 trains; every clean trial is a copy
    only_copies = write_grid_spec(tmp_path, "zip: [{arm: [clean], masking.caption_on: [clean]}]\nseeds: [0, 1]\n",
                                  **{"train.samples_seen": 320})
    states = collect(expand(load_spec(str(only_copies), "smoke")), runs)
    assert time_left_line(states, runs).startswith("time left: none (no trial to train")  # nothing measured: none


def test_time_left_without_a_measured_run_or_a_trial_to_run(tmp_path):
    grid, runs = write_grid_spec(tmp_path, "seeds: [0, 1]\n"), tmp_path / "runs"
    states = collect(expand(load_spec(str(grid), "smoke")), runs)
    assert time_left_line(states, runs).startswith("time left: no estimate yet")  # nothing here has completed
    assert time_left_line([], runs) == "time left: none (no trial to run)"


def test_a_launch_starts_each_seeds_longest_trial_first(tmp_path, monkeypatch):
    body = "zip: [{arm: [few_steps, many_steps], train.samples_seen: [64, 256]}]\nseeds: [%s]\n"
    runs = tmp_path / "runs"

    def launch_order(seeds: str) -> list[tuple[str, int]]:
        grid = write_grid_spec(tmp_path, body % seeds)
        assert main(launch_argv(grid, runs)) == 0
        trials = expand(load_spec(str(grid), "smoke"))
        started = sorted(trials, key=lambda t: attempts(runs / t.run_id)[0]["at"])
        return [(t.axes["arm"], t.axes["seed"]) for t in started]

    assert launch_order("0") == [("many_steps", 0), ("few_steps", 0)]  # nothing measured: the most steps first
    # as if few_steps had measured 100 times many_steps' wall seconds per step (wall times on this shared machine
    # are too noisy to order two tiny runs by): priced at its cell's rate, it goes first in each new seed
    few, many = run_dirs(write_grid_spec(tmp_path, body % "0"), runs)
    rates = {few: 10.0, many: 0.1}
    monkeypatch.setattr(time_left, "seconds_per_step", lambda path: rates.get(path))
    assert launch_order("0, 1, 2")[2:] == [("few_steps", 1), ("many_steps", 1), ("few_steps", 2), ("many_steps", 2)]
