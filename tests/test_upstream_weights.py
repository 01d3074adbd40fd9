"""Upstream weights as records: an encoder stage exports its final weights with their digest, a downstream run
loads them without any checkpoint left, pins their digest, and refuses weights retrained under the same id."""

import json
import shutil

import pytest
import torch

from study import upstream
from study.checkpoint import export_weights
from study.errors import UserError
from study.runstore import RunStore
from sweeps.spec import load_spec, pipeline
from tests.grid_specs import write_pipeline
from unihetero.cli import main


@pytest.fixture
def finished(tmp_path):
    """A completed two-stage pipeline: (runs dir, stage trial, one dependent trial)."""
    grid, runs = write_pipeline(tmp_path), tmp_path / "runs"
    assert main(["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    trials = pipeline(load_spec(str(grid), "smoke"))
    return runs, trials[0], trials[1]


def test_a_stage_exports_its_final_weights_and_their_digest(finished):
    runs, stage, _ = finished
    status = RunStore(runs / stage.run_id).status()
    weights = runs / stage.run_id / status["weights"]
    assert status["weights_sha256"] == upstream.sha256(weights)
    exported = torch.load(weights, weights_only=True)
    final = torch.load(RunStore(runs / stage.run_id).checkpoints()[-1], weights_only=True)["model"]
    assert exported.keys() == final.keys() and all(torch.equal(exported[k], final[k]) for k in final)


def test_a_downstream_run_pins_the_weights_it_loaded_and_needs_no_upstream_checkpoint(finished):
    runs, stage, vlm = finished
    pins = json.loads((runs / vlm.run_id / upstream.PINS).read_text())
    digest = RunStore(runs / stage.run_id).status()["weights_sha256"]
    assert pins == {"model.encoder_checkpoint": {"run": stage.run_id, "file": upstream.WEIGHTS, "sha256": digest}}
    shutil.rmtree(runs / stage.run_id / "checkpoints")
    resolved = upstream.resolve(vlm.config, runs).cfg
    assert resolved.model.encoder_checkpoint == str(runs / stage.run_id / upstream.WEIGHTS)


def test_weights_retrained_under_the_same_id_are_refused(finished):
    runs, stage, vlm = finished
    store = RunStore(runs / stage.run_id)
    other = {k: v + 1e-6 for k, v in torch.load(runs / stage.run_id / upstream.WEIGHTS, weights_only=True).items()}
    status = store.status()
    fields = export_weights(store, other)
    store.write_status("completed", **{**{k: status[k] for k in ("step", "total_steps", "final")}, **fields})
    with pytest.raises(UserError, match="model.encoder_checkpoint.*it was retrained"):
        upstream.pin(upstream.resolve(vlm.config, runs), runs / vlm.run_id)


def test_a_replaced_weights_file_is_refused(finished):
    runs, stage, vlm = finished
    (runs / stage.run_id / upstream.WEIGHTS).write_bytes(b"not the exported weights")
    with pytest.raises(UserError, match=f"model.encoder_checkpoint.*is not the file upstream run '{stage.run_id}'"):
        upstream.resolve(vlm.config, runs)
