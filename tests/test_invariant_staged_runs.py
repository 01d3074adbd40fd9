"""Invariants of staged runs (a VLM run whose config names an upstream encoder run as `run:<id>`):

- every entry point works on one: `train --resume`, `eval`, `bench` and `summary`;
- its upstream references are resolved once per run, at the entry (the upstream status read and its weights hashed
  once, not once per consumer);
- it survives a clone: committed records carry no checkpoints, so where an upstream run's weights are missing a
  dependent says in one line which upstream run to retrain and how, and the retraining never writes over the
  committed record; every committed study whose dependents are committed holds its upstream runs' weights or says
  which it lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from study import upstream
from study.runstore import RunStore
from sweeps.spec import load_spec, pipeline
from tests.grid_specs import write_pipeline
from unihetero.cli import main

ROOT = Path(__file__).parents[1]


@pytest.fixture
def staged(tmp_path) -> tuple[Path, Path, Path]:
    """A completed two-stage pipeline: (grid file, the upstream run, a dependent run)."""
    grid, runs = write_pipeline(tmp_path), tmp_path / "runs"
    assert main(["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    stage, dependent = pipeline(load_spec(str(grid), "smoke"))[:2]
    assert dependent.config.model.encoder_checkpoint == upstream.run_reference(stage.run_id)
    return grid, runs / stage.run_id, runs / dependent.run_id


def test_every_entry_point_works_on_a_staged_run(staged, tmp_path, capsys):
    from study.data.worlds import build_world
    from study.evaluation.bench import world_tasks

    _, _, run = staged
    store = RunStore(run)
    before = store.records("eval.jsonl")
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # completed: nothing to redo
    assert main(["eval", str(run)]) == 0
    evaluated = store.records("eval.jsonl")[-1]
    assert evaluated["reevaluated"] and evaluated["step"] == before[-1]["step"]
    assert evaluated["caption_loss"] == pytest.approx(before[-1]["caption_loss"], rel=1e-6)
    world = build_world(store.config().data)
    task = world_tasks.write_tsv(tmp_path / "mc.tsv", world_tasks.colour_questions(world, 8))
    assert main(["bench", str(run), "--task", str(task)]) == 0
    assert "bench/mc/acc" in store.records("eval.jsonl")[-1]
    capsys.readouterr()
    assert main(["summary", str(run)]) == 0
    assert "status: completed" in capsys.readouterr().out


def test_a_staged_run_resumes_from_its_checkpoint(staged):
    import dataclasses

    from study.train import train

    _, _, run = staged
    cfg = RunStore(run).config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_every=2))
    shutil.rmtree(run)
    train(cfg, run, until_step=2, quiet=True)
    assert RunStore(run).status()["state"] == "running"
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert RunStore(run).status()["state"] == "completed"


def test_upstream_references_are_resolved_once_per_run(staged, monkeypatch, tmp_path):
    grid, stage, run = staged
    calls = {"hash": 0, "resolve": 0}
    hashing, resolving = upstream.sha256, upstream.final_weights

    def counted_hash(path):
        calls["hash"] += Path(path).parent == stage
        return hashing(path)

    def counted_resolve(run_dir, key):
        calls["resolve"] += Path(run_dir) == stage
        return resolving(run_dir, key)

    monkeypatch.setattr(upstream, "sha256", counted_hash)
    monkeypatch.setattr(upstream, "final_weights", counted_resolve)
    shutil.rmtree(run)  # the dependent trains again, from nothing, beside its upstream
    cfg = pipeline(load_spec(str(grid), "smoke"))[1].config
    from study.train import train

    train(cfg, run, quiet=True)
    assert calls == {"hash": 1, "resolve": 1}  # its status read and its weights hashed once


def test_a_dependent_of_an_upstream_without_weights_names_it_and_how_to_retrain(staged, tmp_path, capsys):
    """As in a fresh clone: the upstream run's record is committed without its weights and checkpoints."""
    grid, stage, run = staged
    (stage / upstream.WEIGHTS).unlink()
    shutil.rmtree(stage / "checkpoints")
    status = RunStore(stage).status()
    for key in ("weights", "weights_sha256"):
        status.pop(key)
    (stage / "status.json").write_text(json.dumps(status))
    committed = {p.name: p.read_bytes() for p in stage.iterdir()}
    shutil.rmtree(run)

    capsys.readouterr()
    assert main(["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(stage.parent)]) != 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if stage.name in line]
    assert lines and "retrain" in lines[0] and "--runs-dir" in lines[0], err
    assert {p.name: p.read_bytes() for p in stage.iterdir()} == committed  # the record is untouched

    fresh = tmp_path / "retrained"  # what the line says to do: the pipeline again in a new runs directory
    assert main(["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(fresh)]) == 0
    assert RunStore(fresh / run.name).status()["state"] == "completed"
    assert {p.name: p.read_bytes() for p in stage.iterdir()} == committed


def committed_studies() -> list[Path]:
    return sorted(p for p in (ROOT / "reports" / "results").glob("*/runs") if p.is_dir())


@pytest.mark.parametrize("runs", committed_studies(), ids=lambda p: p.parent.name)
def test_committed_upstream_runs_hold_their_weights_or_are_listed_as_lost(runs):
    """Every upstream run that a committed dependent names either holds its exported weights (their digest as
    its status says), or is listed in the study's LOST_WEIGHTS.md: a record of weights that were never
    committed, so that a dependent added later is known to need a retrain in a new runs directory."""
    lost_file = runs.parent / "LOST_WEIGHTS.md"
    lost = lost_file.read_text() if lost_file.exists() else ""
    for config in sorted(runs.glob("*/config.yaml")):
        for line in config.read_text().splitlines():
            value = line.split(":", 1)[-1].strip()
            if not value.startswith(upstream.RUN_PREFIX):
                continue
            up = runs / value.removeprefix(upstream.RUN_PREFIX)
            status = RunStore(up).status()
            if "weights_sha256" in status:
                assert upstream.sha256(up / status["weights"]) == status["weights_sha256"], up
            else:
                assert up.name in lost, f"{up} has committed dependents but no weights and is not in {lost_file}"
