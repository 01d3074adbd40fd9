"""Grid specs: expansion, scale presets, the shipped grids, and one clear error per mistake."""


import pytest

from study.errors import UserError
from sweeps.spec import GRID_DIR, SCALES, expand, load_spec
from tests.grid_specs import write_grid_spec
from unihetero.cli import main


def test_expansion_is_cartesian_zipped_and_deterministic(tmp_path):
    path = write_grid_spec(tmp_path, """\
        axes:
          objective.target: [none, semantic_input]
        zip:
          - regime: [a, b]
            data.unique_samples: [100, 200]
            train.samples_seen: [32, 48]
        seeds: [0, 1]
        """)
    trials = expand(load_spec(str(path), "smoke"))
    assert len(trials) == 2 * 2 * 2
    assert [t.axes for t in trials[:3]] == [
        {"objective.target": "none", "regime": "a", "data.unique_samples": 100, "train.samples_seen": 32, "seed": 0},
        {"objective.target": "none", "regime": "a", "data.unique_samples": 100, "train.samples_seen": 32, "seed": 1},
        {"objective.target": "none", "regime": "b", "data.unique_samples": 200, "train.samples_seen": 48, "seed": 0},
    ]
    assert trials[2].config.train.samples_seen == 48 and trials[2].config.data.unique_samples == 200
    assert [t.run_id for t in trials] == [t.run_id for t in expand(load_spec(str(path), "smoke"))]
    assert len({t.run_id for t in trials}) == len(trials)


def test_scale_preset_overrides_base_axes_zip_and_seeds(tmp_path):
    path = write_grid_spec(tmp_path, """\
        axes:
          train.lr: [0.001, 0.002]
        seeds: [0, 1, 2]
        presets:
          smoke:
            base: {overrides: {train.batch_size: 8}}
            axes: {train.lr: [0.003]}
            seeds: [5]
          cpu: {}
        """)
    (t,) = expand(load_spec(str(path), "smoke"))
    assert (t.config.train.batch_size, t.config.train.lr, t.config.train.seed) == (8, 0.003, 5)
    assert t.config.train.samples_seen == 64  # base overrides kept
    assert len(expand(load_spec(str(path), "cpu"))) == 6


def test_same_trial_in_two_grids_is_one_run(tmp_path):
    a = write_grid_spec(tmp_path, "axes: {objective.target: [none, pixel]}\n", name="a")
    b = write_grid_spec(tmp_path, "axes: {objective.target: [pixel]}\n", name="b")
    ids_a = {t.run_id for t in expand(load_spec(str(a), "smoke"))}
    assert {t.run_id for t in expand(load_spec(str(b), "smoke"))} <= ids_a


def _has_preset(grid: str, scale: str) -> bool:
    try:
        load_spec(grid, scale)
    except UserError as e:
        if "no preset" in str(e):
            return False
        raise
    return True


@pytest.mark.parametrize("grid", sorted(p.stem for p in GRID_DIR.glob("*.yaml")))
def test_shipped_grids_expand_at_every_scale(grid):
    demo_only = not _has_preset(grid, "cpu") and _has_preset(grid, "demo")  # the demo grid: smoke and demo only
    spec_scales = ["smoke", "demo"] if demo_only else [s for s in SCALES if s not in ("full", "demo")]
    for scale in spec_scales:
        trials = expand(load_spec(grid, scale))
        assert trials, (grid, scale)
    smoke = expand(load_spec(grid, "smoke"))
    assert all(t.config.model.size == "tiny" for t in smoke)
    assert sum(t.config.steps for t in smoke) <= 120  # the whole smoke grid runs in minutes on 2 cores


def test_reproduce_all_of_protocol_2_runs_the_v2_study_grids_only():
    """Calibration and pilot grids of other issues (protocol 0) never train into the v2 study's runs."""
    protocols = {p.stem: load_spec(p.stem, "smoke").protocol for p in GRID_DIR.glob("*.yaml")}
    v2 = {name for name, protocol in protocols.items() if protocol == 2}
    assert v2 and all(name.startswith(("v2_", "encoder_pretrain_v2")) for name in v2)
    assert {protocols[g] for g in ("world_v2_calibration", "world_v2_calibration_r3", "regime")} == {0}


@pytest.mark.parametrize("grid", ["data_scaling", "v2_data_scaling"])
def test_data_scaling_spans_two_orders_of_magnitude_in_both_regimes(grid):
    for scale in ("cpu", "gpu"):
        trials = expand(load_spec(grid, scale))
        for regime in ("fixed", "epoch"):
            ds = sorted({t.config.data.unique_samples for t in trials if t.axes["regime"] == regime})
            assert len(ds) >= 5 and ds[-1] / ds[0] >= 100
        epoch = [t for t in trials if t.axes["regime"] == "epoch"]
        assert all(t.config.train.samples_seen == t.config.data.unique_samples for t in epoch)


@pytest.mark.parametrize(("body", "message"), [
    ("colour: red\n", "line 9, key 'colour': unknown key"),
    ("axes:\n  objective.targt: [none]\n", "line 10, key 'axes.objective.targt': unknown config key 'objective.targt'"),
    ("axes:\n  objective.target: []\n", "key 'axes.objective.target': empty axis"),
    ("axes:\n  objective.target: [none, picture]\n", "'objective.target': 'picture' is not"),
    ("axes:\n  train.lr: [-1]\n", "line 10, key 'axes.train.lr': config key 'train.lr': -1.0 out of range"),
    ("axes:\n  train.lr: 0.1\n", "expected a list of values"),
    ("zip:\n  - {train.lr: [0.1, 0.2], train.seed: [1]}\n", "key 'zip.0': zip group lists of unequal length"),
    ("axes:\n  train.seed: [1, 2]\n", "key 'train.seed' is set by two axes"),
    ("axes:\n  regime: [a]\n", "an axis key is a config key"),
    ("axes:\n  train.lr: [0.001, 0.0010]\n", "resolve to the same config"),
    ("presets:\n  huge: {}\n", "key 'presets.huge': unknown key (allowed: smoke, demo, cpu, gpu, full)"),
    ("protocol: 4\n", "key 'protocol': 4 is not 0 (no study), 1, 2 or 3"),
])
def test_spec_errors_name_file_line_and_key(tmp_path, body, message):
    path = write_grid_spec(tmp_path, body)
    with pytest.raises(UserError) as e:
        expand(load_spec(str(path), "smoke"))
    assert message in str(e.value) and str(path) in str(e.value)


def test_unknown_base_preset_and_missing_scale(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("base: {preset: gigantic}\npresets: {smoke: {}}\n")
    with pytest.raises(UserError, match="line 1, key 'base.preset': unknown preset 'gigantic'"):
        load_spec(str(path), "smoke")
    with pytest.raises(UserError, match="no preset 'full' \\(available: smoke, cpu, gpu\\)"):
        load_spec("data_scaling", "full")
    with pytest.raises(UserError, match="neither a grid name"):
        load_spec("no_such_grid", "smoke")


def test_grid_name_cannot_escape(tmp_path):
    path = write_grid_spec(tmp_path, name="g")
    path.write_text(path.read_text().replace("name: g", "name: ../../etc"))
    with pytest.raises(UserError, match="not a grid name"):
        load_spec(str(path), "smoke")


def test_plan_prints_the_trial_table(tmp_path, capsys):
    path = write_grid_spec(tmp_path, "axes: {objective.target: [none, semantic_input]}\nseeds: [0]\n")
    assert main(["sweep", "plan", str(path), "--preset", "smoke"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("grid g (preset smoke, base tiny): 2 trials, 8 steps,")
    assert out[1].split() == ["#", "objective.target", "seed", "run_id", "steps", "FLOPs"]
    ids = [t.run_id for t in expand(load_spec(str(path), "smoke"))]
    assert [line.split()[3] for line in out[3:]] == ids


def test_spec_error_is_one_line_with_exit_2(tmp_path, capsys):
    path = write_grid_spec(tmp_path, "axes:\n  objective.targt: [none]\n")
    assert main(["sweep", "plan", str(path), "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: grid spec") and "line 10" in err


@pytest.mark.parametrize("follow_up, source, reused_arms", [
    ("masked_generation", "mask_distribution", {"semantic_input", "si+fixed", "si+uniform", "si+gauss_.5_.25_sample",
                                                "si+gauss_.5_.25_batch", "si+gauss_.75_.25", "si+gauss_.5_.5",
                                                "si+truncnorm_mar"}),
    ("semantic_weight", "masked_generation", {"text_only", "semantic_w1"}),
])
def test_follow_ups_train_only_their_new_arms(follow_up: str, source: str, reused_arms: set[str]):
    """A follow-up grid reuses its source grid's runs (same configs, same run ids) and trains only new arms."""
    for scale in ("smoke", "cpu"):
        ids = {t.run_id for t in expand(load_spec(source, scale))}
        for t in expand(load_spec(follow_up, scale)):
            assert (t.run_id in ids) == (t.axes["arm"] in reused_arms), (follow_up, scale, t.axes["arm"])
