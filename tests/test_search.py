"""Optuna search: parameters, pruning that stops a run cleanly at an evaluation, and resuming a study."""

import optuna
import pytest

import sweeps.search as search
from study.errors import UserError
from study.runstore import RunStore
from sweeps.search import Param, open_storage, parse_param, run_search
from tests.search_options import ARM, options
from unihetero.cli import main


def test_parse_param():
    assert parse_param("train.lr=1e-4:1e-2:log") == Param("train.lr", 1e-4, 1e-2, True)
    assert parse_param("masking.mean=0.5:1") == Param("masking.mean", 0.5, 1.0, False)
    for bad in ("train.lr", "lr=1:2", "train.lr=2:1", "train.lr=0:1:log", "train.lr=a:b", "train.lr=1:2:cube"):
        with pytest.raises(UserError, match="--param"):
            parse_param(bad)


def test_bad_parameter_key_fails_before_any_trial(tmp_path):
    with pytest.raises(UserError, match="unknown config key 'train.lrr'"):
        run_search(options(tmp_path, params=(Param("train.lrr", 0.1, 0.2),)))
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_search_prunes_cleanly_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: trial.number == 1)
    def argv(trials: int) -> list[str]:
        return ["search", "tiny", *ARM, "--param", "train.lr=1e-4:1e-2:log", "--eval-every", "5",
                "--trials", str(trials), "--runs-dir", str(tmp_path / "runs"), "--study-name", "s"]

    assert main(argv(2)) == 0
    assert "study s: 1 complete, 1 pruned" in capsys.readouterr().out
    study = optuna.load_study(study_name="s", storage=open_storage(str(tmp_path / "runs/search/s.journal")))
    pruned = RunStore(tmp_path / "runs" / study.trials[1].user_attrs["run_id"])
    status = pruned.status()
    assert (status["state"], status["step"], status["pruned"]) == ("failed", 5, True)
    assert [r["step"] for r in pruned.records("eval.jsonl")] == [0, 5]  # stopped at the pruning point
    assert study.trials[1].intermediate_values == {5: pruned.records("eval.jsonl")[-1]["caption_loss"]}
    done = RunStore(tmp_path / "runs" / study.trials[0].user_attrs["run_id"])
    assert study.trials[0].value == done.records("eval.jsonl")[-1]["caption_loss"]

    assert main(argv(2)) == 0  # resumed: nothing left to do
    assert main(argv(3)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "study s: 1 complete, 1 pruned" and lines[-2] == "study s: 2 complete, 1 pruned"


@pytest.mark.slow
def test_trial_left_running_by_a_dead_process_is_rerun_with_its_parameters(tmp_path, monkeypatch):
    opts = options(tmp_path, trials=1)
    storage = open_storage(str(tmp_path / "runs/search/s.journal"))
    study = optuna.create_study(storage=storage, study_name="s")
    orphan = study.ask()  # RUNNING forever: its process was killed
    orphan.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    monkeypatch.setattr(search, "STALE_S", 0.0)
    trials = run_search(opts).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params
