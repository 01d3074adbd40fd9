import pytest

from study.config import config_reference, load_config
from unihetero.cli import main


def test_presets_resolve_and_hash_stably():
    a, b = load_config("tiny"), load_config("tiny")
    assert a.run_id() == b.run_id()
    assert load_config("tiny", ["train.lr=3e-4"]).train.lr == 3e-4
    assert load_config("tiny", ["train.lr=3e-4"]).run_id() != a.run_id()
    assert load_config("cpu-small").model.width == 128


def test_run_id_ignores_fields_at_their_default():
    """A field added to the schema with a default leaves every existing run id unchanged."""
    import dataclasses

    from study import config

    cfg = load_config("tiny", ["objective.target=semantic_input"])
    before = cfg.run_id()

    @dataclasses.dataclass
    class TrainWithNewField(config.TrainConfig):
        new_knob: int = config.opt(7, "a field added in a later version")

    cfg.train = TrainWithNewField(**dataclasses.asdict(cfg.train))
    assert cfg.run_id() == before
    cfg.train.new_knob = 8
    assert cfg.run_id() != before


def test_yaml_file_can_start_from_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: tiny\nobjective:\n  target: pixel\n")
    cfg = load_config(str(path))
    assert cfg.objective.target == "pixel" and cfg.model.size == "tiny"


BAD = [
    (["tiny", "train.nope=1"], "unknown config key 'train.nope'"),
    (["tiny", "nosection.lr=1"], "unknown config key 'nosection'"),
    (["tiny", "train.lr=fast"], "config key 'train.lr': expected float"),
    (["tiny", "train.batch_size=0"], "config key 'train.batch_size': 0 out of range"),
    (["tiny", "train.batch_size=2.5"], "config key 'train.batch_size': expected int"),
    (["tiny", "masking.distribution=beta"], "config key 'masking.distribution': 'beta' is not one of"),
    (["tiny", "objective.target=pixels"], "config key 'objective.target'"),
    (["tiny", "model.patch_size=5"], "config key 'model.patch_size'"),
    (["tiny", "train.lr=.nan"], "config key 'train.lr'"),
    (["tiny", "eval.views=[]"], "config key 'eval.views'"),
    (["tiny", "train"], "override 'train'"),
    (["no-such-preset"], "neither a preset"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_config_is_one_line_error_with_exit_2_and_writes_nothing(tmp_path, capsys, argv, message):
    runs = tmp_path / "runs"
    code = main(["train", *argv, "--runs-dir", str(runs)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert not runs.exists()


def test_bad_yaml_file_is_named(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    assert main(["train", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "broken.yaml" in capsys.readouterr().err


def test_config_reference_lists_every_key():
    ref = config_reference()
    for key in ("objective.pixel_grad_to_llm", "masking.distribution", "data.caption_coverage", "train.precision"):
        assert f"`{key}`" in ref
