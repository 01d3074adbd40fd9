"""Argument errors: one line from the (sub)command that met them, never the program name twice, and the
closest valid option for a misspelt one."""

import pytest

from unihetero.cli import main


def cli_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_unknown_option_of_a_subcommand_names_it_and_suggests_the_close_one(capsys):
    err = cli_error(capsys, ["sweep", "launch", "g", "--preset", "smoke", "--slurm-partition", "x"])
    assert err == ("unihetero sweep launch: error: unrecognized arguments: --slurm-partition x "
                   "(did you mean --partition?)")


def test_unknown_option_without_a_close_match_gets_no_suggestion(capsys):
    err = cli_error(capsys, ["sweep", "status", "g", "--preset", "smoke", "--zzzzzz"])
    assert err == "unihetero sweep status: error: unrecognized arguments: --zzzzzz"


def test_top_level_and_value_errors_name_the_program_once(capsys):
    err = cli_error(capsys, ["no-such-command"])
    assert err.startswith("unihetero: error: argument command: invalid choice: 'no-such-command'")
    err = cli_error(capsys, ["sweep", "launch", "g", "--preset", "huge"])
    assert err.startswith("unihetero sweep launch: error: argument --preset: invalid choice: 'huge'")
    assert "unihetero unihetero" not in err


def test_python_dash_m_unihetero_is_the_same_cli():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "unihetero", "train", "--no-such-option"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("unihetero train: error: unrecognized arguments: --no-such-option")


@pytest.mark.parametrize(("extra", "message"), [
    (["--workers-per-trial", "2", "--gpus-per-trial", "1"],
     "error: --gpus-per-trial: a trial of --workers-per-trial Ray Train workers asks for resources per worker: use "
     "--cpus-per-worker and --gpus-per-worker"),
    (["--gpus-per-worker", "1"], "error: --gpus-per-worker needs --workers-per-trial (a trial whose ranks share one "
                                 "node asks with --cpus-per-trial and --gpus-per-trial)")])
def test_ray_resources_per_trial_and_per_worker_do_not_mix(tmp_path, capsys, extra, message):
    runs = tmp_path / "runs"
    argv = ["sweep", "launch", "generation_target", "--preset", "smoke", "--backend", "ray", "--runs-dir", str(runs)]
    assert main([*argv, *extra]) == 2
    assert capsys.readouterr().err == message + "\n"
    assert not runs.exists()
