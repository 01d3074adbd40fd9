"""Bad input everywhere (fuzzed with hypothesis): a one-line error and exit code 2, never a traceback,
and nothing written."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.config import RunConfig, load_config
from study.errors import UserError
from unihetero.cli import main

KEYS = [f"{s.name}.{f.name}" for s in dataclasses.fields(RunConfig)
        for f in dataclasses.fields(typing.get_type_hints(RunConfig)[s.name])]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                   st.text(max_size=20), st.lists(st.integers(-5, 5), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=30)), value=VALUES)
def test_any_override_either_resolves_or_raises_a_user_error(key, value):
    try:
        cfg = load_config("tiny", [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    except UserError as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert isinstance(cfg, RunConfig)


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                         st.dictionaries(st.text(max_size=8), VALUES, max_size=4).map(
                             lambda d: yaml.safe_dump(d).encode())))
def test_fuzzed_config_files_give_one_line_exit_2_and_write_nothing(tmp_path, capsys, content):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    runs = tmp_path / "runs"
    code = main(["train", str(path), "--runs-dir", str(runs), "--dry-run"])
    err = capsys.readouterr().err
    if code != 0:
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert not runs.exists()


@FUZZ
@given(argv=st.lists(st.one_of(st.sampled_from(["train", "eval", "summary", "fit", "--runs-dir", "--resume",
                                                "--bootstrap", "--form", "tiny", "-x", "--json"]),
                               st.text(max_size=12)), max_size=6))
def test_fuzzed_command_lines_never_trace_back(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    try:
        code = main([a for a in argv if a != "train"] if "--dry-run" not in argv else argv)
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        code = e.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("path", ["/dev/null", "/nonexistent/dir/config.yaml", "/"])
def test_unreadable_config_paths(tmp_path, capsys, path):
    assert main(["train", path, "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
