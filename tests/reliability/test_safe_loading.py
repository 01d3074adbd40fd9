"""Safe loading: YAML (configs, grid specs, run configs) through safe loading only; checkpoints loaded with
weights_only=True, so a pickle payload in one is never executed; run ids and grid names cannot point outside
the runs directory.

`--resume PATH` resumes the directory the user names, as given: a symlink to a run directory is followed
(it is the user's own path), but what the run writes lands inside that directory, and a symlink planted in
the run directory is replaced by the atomic write, never written through."""

from __future__ import annotations

import contextlib
import pickle
import textwrap

import pytest
import torch

from study.checkpoint import load_latest
from study.errors import UserError
from study.runstore import RunStore
from study.train import train
from sweeps.layout import grid_file, run_dir
from tests.grid_specs import write_grid_spec
from tests.reliability.conftest import assert_same_run, run_config
from unihetero.cli import main


def _python_tag(marker) -> str:
    """YAML that would create `marker` if loaded with an unsafe loader."""
    return f"!!python/object/apply:builtins.open [{str(marker)!r}, w]"


def _one_line_exit_2(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_yaml_python_tags_are_rejected_everywhere(tmp_path, capsys):
    marker, runs = tmp_path / "executed", tmp_path / "runs"
    config = tmp_path / "config.yaml"
    config.write_text(f"train:\n  lr: {_python_tag(marker)}\n")
    _one_line_exit_2(["train", str(config), "--runs-dir", str(runs)], capsys)
    _one_line_exit_2(["train", "tiny", f"train.lr={_python_tag(marker)}", "--runs-dir", str(runs)], capsys)

    spec = write_grid_spec(tmp_path, textwrap.dedent(f"""\
        axes:
          train.lr: [{_python_tag(marker)}]
        """))
    _one_line_exit_2(["sweep", "plan", str(spec), "--preset", "smoke"], capsys)
    _one_line_exit_2(["sweep", "launch", str(spec), "--preset", "smoke", "--runs-dir", str(runs)], capsys)

    run = tmp_path / "run"  # a run directory whose config.yaml was tampered with
    run.mkdir()
    (run / "config.yaml").write_text(f"!!python/object/apply:builtins.open [{str(marker)!r}, w]\n")
    _one_line_exit_2(["train", "--resume", str(run)], capsys)
    _one_line_exit_2(["summary", str(run)], capsys)
    assert not marker.exists() and not runs.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.slow
def test_pickle_payload_in_a_checkpoint_is_not_executed(tmp_path, reference_run):
    cfg = run_config()
    run = tmp_path / "run"
    train(cfg, run, until_step=10, quiet=True)
    marker = tmp_path / "executed"
    evil = run / "checkpoints" / "step_00000015.pt"  # the newest checkpoint, so the first one loaded
    torch.save({"model": _Payload(marker), "step": 15}, evil)
    with pytest.raises(pickle.UnpicklingError):  # what weights_only=True does with it
        torch.load(evil, weights_only=True)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unsafe load would run it
    assert marker.exists()
    marker.unlink()

    with pytest.warns(UserWarning, match=evil.name):
        assert load_latest(RunStore(run))["step"] == 10
    with pytest.warns(UserWarning, match=evil.name):
        train(cfg, run, quiet=True)  # falls back to step 10 and finishes
    assert not marker.exists()
    assert_same_run(reference_run, run)


@pytest.mark.parametrize("name", ["../../etc", "..", "a/b", "/etc/passwd", "x" * 65, ".hidden", "a\nb"])
def test_grid_name_cannot_leave_the_runs_directory(tmp_path, capsys, name):
    runs = tmp_path / "inner" / "runs"
    spec = write_grid_spec(tmp_path, name="g")
    spec.write_text(spec.read_text().replace("name: g", f"name: {name!r}"))
    _one_line_exit_2(["sweep", "launch", str(spec), "--preset", "smoke", "--runs-dir", str(runs)], capsys)
    _one_line_exit_2(["sweep", "status", name, "--preset", "smoke", "--runs-dir", str(tmp_path)], capsys)
    assert not (tmp_path / "inner").exists()  # nothing written anywhere
    with pytest.raises(UserError):
        grid_file(runs, name, "smoke")


@pytest.mark.parametrize("run_id", ["../../etc", "..", "/etc", "064199531a3a/../..", "064199531A3A", ""])
def test_run_id_cannot_leave_the_runs_directory(tmp_path, run_id):
    with pytest.raises(UserError):
        run_dir(tmp_path, run_id)


@pytest.mark.slow
def test_resume_through_a_symlink_writes_only_inside_the_run(tmp_path, reference_run, capsys):
    cfg = run_config()
    real = tmp_path / "scratch" / cfg.run_id()
    train(cfg, real, until_step=10, quiet=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the run's\n")
    (real / "status.json").unlink()
    (real / "status.json").symlink_to(outside)  # a planted link inside the run directory

    with pytest.warns(UserWarning, match="status.json"):  # the link's target is no status: unknown
        assert main(["train", "--resume", str(link), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(link)
    assert outside.read_text() == "not the run's\n"  # replaced, not written through
    assert not (real / "status.json").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "outside.txt", "scratch"]
    assert_same_run(reference_run, real)


def _encoder_payload(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "encoder.pt"
    torch.save({"model": _Payload(marker)}, evil)
    argv = ["train", "tiny", "train.samples_seen=32", f"model.encoder_checkpoint={evil}", "--runs-dir",
            str(tmp_path / "runs"), "--quiet"]
    return marker, argv


def test_pickle_payload_as_encoder_checkpoint_is_not_executed(tmp_path):
    marker, argv = _encoder_payload(tmp_path)
    with contextlib.suppress(pickle.UnpicklingError):  # refused (the next test: how it is reported)
        main(argv)
    assert not marker.exists()


def test_pickle_payload_as_encoder_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    _, argv = _encoder_payload(tmp_path)
    _one_line_exit_2(argv, capsys)


def test_every_torch_load_in_the_toolkit_is_a_safe_load():
    """Every `torch.load` of the toolkit's own code passes weights_only=True (the tests above exercise them)."""
    import ast
    from pathlib import Path

    root = Path(__file__).parents[2]
    unsafe = []
    for package in ("study", "sweeps", "analysis", "reports", "unihetero", "benchmarks", "scripts"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                        getattr(node.func.value, "id", None) == "torch":
                    safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True
                               for k in node.keywords)
                    if not safe:
                        unsafe.append(f"{path.relative_to(root)}:{node.lineno}")
    assert unsafe == []


@pytest.mark.parametrize("command", ["bench", "eval"])
def test_pickle_payload_in_a_checkpoint_is_not_executed_by_bench_or_eval(tmp_path, command, capsys):
    from study.data.worlds import build_world
    from study.evaluation.bench import world_tasks

    cfg = run_config()
    run = train(cfg, tmp_path / "run", until_step=10, quiet=True)
    marker = tmp_path / "executed"
    torch.save({"model": _Payload(marker), "step": 10}, run / "checkpoints" / "step_00000010.pt")
    task = world_tasks.write_tsv(tmp_path / "mc.tsv", world_tasks.colour_questions(build_world(cfg.data), 4))
    argv = ["bench", str(run), "--task", str(task)] if command == "bench" else ["eval", str(run)]
    with contextlib.suppress(pickle.UnpicklingError):
        main(argv)
    assert not marker.exists()
