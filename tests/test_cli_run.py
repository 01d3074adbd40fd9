import json

from study.config import load_config
from unihetero.cli import main

FAST = ["train.samples_seen=64", "eval.num_images=4", "eval.probe_images=20", "eval.inference_scaling=false"]


def test_train_prints_run_dir_then_summary_and_eval(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "tiny", *FAST, "--runs-dir", str(runs), "--quiet", "--summary"]) == 0
    out = capsys.readouterr().out
    run_dir = runs / load_config("tiny", FAST).run_id()
    assert out.splitlines()[0] == str(run_dir)
    assert "status: completed" in out and "zs_acc" in out
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"

    assert main(["eval", str(run_dir)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["reevaluated"] and record["step"] == 4 and "zs_acc" in record

    assert main(["summary", str(run_dir)]) == 0
    assert "caption_loss" in capsys.readouterr().out


def test_run_commands_reject_a_non_run_directory(tmp_path, capsys):
    for argv in (["eval", str(tmp_path)], ["summary", str(tmp_path)], ["train", "--resume", str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a run directory" in err
