"""`sweep launch --until-decided`: on a smoke grid, a comparison with a large effect is decided at the first look and
gets no more seeds, one that stays open gets the next wave (`--waves 1` stops after the first look, and a relaunch
goes on), every look is recorded, and a relaunch after the last trains and looks no more; protocol files are
checked with one-line errors; trials that would train exactly as another run train once.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from analysis.protocol import load_protocol
from study.errors import UserError
from study.runstore import RunStore
from sweeps.dedupe import representatives
from sweeps.spec import expand, load_spec
from unihetero.cli import main

GRID = """\
    name: decide_smoke
    protocol: 3
    base:
      preset: tiny
      overrides: {train.samples_seen: 320, train.warmup_steps: 2, train.checkpoint_every: 0, eval.num_images: 8,
                  eval.probe_images: 40, eval.inference_scaling: false}
    zip:
      - arm: [text_only, broken, other_world]
        train.lr: [0.003, 1.0e-7, 0.003]
        data.world_seed: [0, 0, 7]
    seeds: [1, 2, 3]
    presets: {smoke: {}}
    """
PROTOCOL = """\
    protocol: 3
    metric: caption_loss
    higher_is_better: false
    margin: 1.0e-6
    spending: pocock
    seeds: {first: 3, wave: 2, cap: 5}
    families: {smoke: "a large effect and a noisy null"}
    comparisons:
      - {id: broken, family: smoke, grid: decide_smoke, arm: broken, baseline: text_only, claim: inferior}
      - {id: other_world, family: smoke, grid: decide_smoke, arm: other_world, baseline: text_only}
    """


def write(tmp_path: Path) -> tuple[Path, Path]:
    grid, protocol = tmp_path / "decide_smoke.yaml", tmp_path / "protocol.yaml"
    grid.write_text(textwrap.dedent(GRID))
    protocol.write_text(textwrap.dedent(PROTOCOL))
    return grid, protocol


@pytest.mark.slow
def test_until_decided_stops_one_comparison_early_and_extends_the_other(tmp_path, capsys):
    grid, protocol = write(tmp_path)
    runs = tmp_path / "runs"
    argv = ["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(runs), "--workers", "2",
            "--until-decided", str(protocol)]
    assert main([*argv, "--waves", "1"]) == 0  # one wave and its look; the next wave is recorded, not trained
    (only,) = [json.loads(line) for line in (runs / "looks" / "decide_smoke__smoke.jsonl").read_text().splitlines()]
    assert only["extend"] == {"comparisons": ["other_world"], "seeds": [4, 5]}
    assert len([p for p in runs.glob("*/status.json")]) == 9  # seeds 4 and 5 not started
    capsys.readouterr()
    status = ["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs)]
    assert main(status) == 0  # the grid's own trials, and where the looks are
    out = capsys.readouterr().out
    assert "9/9 completed" in out and "give --until-decided PROTOCOL" in out and "look 1 (" in out
    assert main([*status, "--until-decided", str(protocol)]) == 0  # with the trials the recorded wave added
    out = capsys.readouterr().out
    assert "9/13 completed, 0 running, 0 interrupted, 0 failed, 4 pending" in out
    assert "next wave: seeds [4, 5] for other_world" in out and "broken inferior (n=3)" in out
    assert re.search(r"\nbroken +1 +3 +\+\d\.\d{4} .* inferior ", out.split("at its latest look:")[1])
    assert "worker-minutes for 4 unfinished trial(s)" in out and "(a look may add more)" in out
    assert "to the cap of 5 seeds per arm: at most about " in out  # the planned wave reaches the cap: no more
    assert "worker-minutes for 4 unfinished trial(s), if every comparison still open" in out
    from sweeps.adaptive import trials_to_cap

    at_most = {t.run_id for t in trials_to_cap(load_spec(str(grid), "smoke"), runs, load_protocol(protocol))}
    assert main(argv) == 0  # a relaunch trains that wave and goes on
    looks = [json.loads(line) for line in (runs / "looks" / "decide_smoke__smoke.jsonl").read_text().splitlines()]
    first, second = looks
    assert first["comparisons"]["broken"]["verdict"] == "inferior" and first["comparisons"]["broken"]["n"] == 3
    assert first["comparisons"]["other_world"]["verdict"] == "open"
    assert first["extend"] == {"comparisons": ["other_world"], "seeds": [4, 5]}
    assert set(second["comparisons"]) == {"other_world"} and second["comparisons"]["other_world"]["n"] == 5
    assert second["comparisons"]["other_world"]["sizes"] == [3, 5] and second["extend"] is None
    trials = json.loads((runs / "grids" / "decide_smoke__smoke.json").read_text())["trials"]
    seeds = {arm: sorted(t["axes"]["seed"] for t in trials if t["axes"]["arm"] == arm)
             for arm in ("text_only", "broken", "other_world")}
    assert seeds == {"text_only": [1, 2, 3, 4, 5], "broken": [1, 2, 3], "other_world": [1, 2, 3, 4, 5]}
    assert all(RunStore(runs / t["run_id"]).status()["state"] == "completed" for t in trials)
    assert {t["run_id"] for t in trials} == at_most  # other_world stayed open to the cap: the worst case came true

    before = sorted(p.name for p in runs.iterdir())
    assert main(argv) == 0  # the procedure ended: a relaunch trains nothing and looks no more
    assert sorted(p.name for p in runs.iterdir()) == before
    assert len((runs / "looks" / "decide_smoke__smoke.jsonl").read_text().splitlines()) == 2

    # the report (its protocol.yaml beside the runs directory) opens with the same decisions at the same looks
    assert main(["report", str(runs), "--out", str(tmp_path / "report"), "--bootstrap", "0", "--no-figures"]) == 0
    import polars as pl

    lead = pl.read_csv(tmp_path / "report" / "tables" / "decisions.csv")
    rows = {r["comparison"]: r for r in lead.iter_rows(named=True)}
    assert rows["broken"]["verdict"] == "inferior" and rows["broken"]["n"] == 3
    assert rows["other_world"]["n"] == 5 and rows["other_world"]["looks"] == 2
    assert rows["other_world"]["verdict"] == second["comparisons"]["other_world"]["verdict"]
    assert "Lead table: each planned comparison decided" in (tmp_path / "report" / "report.md").read_text()


def test_waves_and_max_seeds_apply_with_until_decided_only(tmp_path, capsys):
    grid, _ = write(tmp_path)
    for option in (["--waves", "1"], ["--max-seeds", "5"]):
        argv = ["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(tmp_path / "runs"), *option]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and option[0] in err and "--until-decided" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("edit", "message"), [
    ("margin: 1.0e-6", "key 'margin': expected a number"),
    ("cap: 5", "key 'seeds': wave must be"),
    ("family: smoke, grid: decide_smoke, arm: broken", "key 'comparisons[0].family'"),
    ("spending: pocock", "key 'spending'"),
])
def test_a_bad_protocol_is_one_line_naming_the_key(tmp_path, edit, message, capsys):
    _, protocol = write(tmp_path)
    broken = {"margin: 1.0e-6": "margin: -1", "cap: 5": "cap: 2", "spending: pocock": "spending: sometimes",
              "family: smoke, grid: decide_smoke, arm: broken": "family: other, grid: decide_smoke, arm: broken"}
    protocol.write_text(protocol.read_text().replace(edit, broken[edit]))
    with pytest.raises(UserError, match=re.escape(message)):
        load_protocol(protocol)
    assert main(["power", "--protocol", str(protocol)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.split(":")[0] in err


def test_trials_that_train_exactly_alike_are_listed_and_train_once(tmp_path, capsys):
    """Masking without a generation head, read by the caption on the clean sequence, changes nothing; nor does
    caption_on without masking: such trials train as the plain text-only run does."""
    spec_path = tmp_path / "masking.yaml"
    spec_path.write_text(textwrap.dedent("""\
        name: masking_copies
        base: {preset: tiny, overrides: {train.samples_seen: 64, train.warmup_steps: 2, eval.num_images: 4,
                                         eval.probe_images: 20, eval.inference_scaling: false,
                                         masking.caption_on: clean}}
        zip:
          - mask: [none, truncnorm]
            masking.distribution: [none, truncnorm]
          - arm: [text_only, semantic_input]
            objective.target: [none, semantic_input]
        seeds: [0]
        presets: {smoke: {}}
        """))
    trials = expand(load_spec(str(spec_path), "smoke"))
    by_label = {(t.axes["mask"], t.axes["arm"]): t for t in trials}
    copies = representatives(trials)
    assert copies == {by_label[("truncnorm", "text_only")].run_id: by_label[("none", "text_only")].run_id}
    assert main(["sweep", "plan", str(spec_path), "--preset", "smoke"]) == 0
    copy_id, source_id = by_label[("truncnorm", "text_only")].run_id, by_label[("none", "text_only")].run_id
    assert (f"trial 2 ({copy_id}) trains exactly as {source_id}: masking.distribution, masking.caption_on, "
            "objective.diffusion_width, objective.diffusion_depth, objective.diffusion_timesteps, "
            "objective.diffusion_batch_mul have no effect in it; it trains once") in capsys.readouterr().out
    runs = tmp_path / "runs"
    assert main(["sweep", "launch", str(spec_path), "--preset", "smoke", "--runs-dir", str(runs)]) == 0
    copy = RunStore(runs / by_label[("truncnorm", "text_only")].run_id)
    source = RunStore(runs / by_label[("none", "text_only")].run_id)
    assert copy.status()["same_as"] == source.path.name and not copy.checkpoints()
    assert copy.records("eval.jsonl") == source.records("eval.jsonl")
    attempts = [p.name for p in runs.glob("*/sweep_attempts.jsonl")]
    assert len(attempts) == 3  # three trainings for four trials


def test_a_wave_adds_seeds_only_to_the_arms_of_the_open_comparison(tmp_path):
    """The selection behind each wave, without training: the first seeds run every arm; an extension of one
    comparison adds its arm and its baseline at the new seeds, and nothing of the other arm."""
    from sweeps.adaptive import chosen, first_seeds, with_seeds

    grid, protocol_path = write(tmp_path)
    spec = load_spec(str(grid), "smoke")
    protocol = load_protocol(protocol_path)
    assert first_seeds(spec) == [1, 2, 3]
    trials = expand(with_seeds(spec, [1, 2, 3, 4, 5]))
    comparisons = {c.id: c for c in protocol.comparisons}
    first = chosen(trials, [1, 2, 3], [], comparisons)
    assert sorted((t.axes["arm"], t.axes["seed"]) for t in first) == sorted(
        (arm, seed) for arm in ("text_only", "broken", "other_world") for seed in (1, 2, 3))
    waved = chosen(trials, [1, 2, 3], [{"comparisons": ["broken"], "seeds": [4, 5]}], comparisons)
    added = {(t.axes["arm"], t.axes["seed"]) for t in waved} - {(t.axes["arm"], t.axes["seed"]) for t in first}
    assert added == {("broken", 4), ("broken", 5), ("text_only", 4), ("text_only", 5)}


def test_the_trials_to_the_cap_continue_the_open_comparisons_waves(tmp_path):
    """`sweep status --until-decided`'s worst case: before a look every comparison runs to the cap; after one, only
    those it extended, in waves of new seeds, each while one more wave stays within the cap."""
    from sweeps.adaptive import looks_file, trials_to_cap

    grid, protocol_path = write(tmp_path)
    spec, runs = load_spec(str(grid), "smoke"), tmp_path / "runs"

    def seeds(cap: int = 9) -> dict[str, list[int]]:
        protocol_path.write_text(re.sub(r"cap: \d+", f"cap: {cap}", protocol_path.read_text()))
        out: dict[str, list[int]] = {}
        for t in trials_to_cap(spec, runs, load_protocol(protocol_path)):
            out.setdefault(t.axes["arm"], []).append(t.axes["seed"])
        return {arm: sorted(s) for arm, s in out.items()}

    every = list(range(1, 10))
    assert seeds() == {"text_only": every, "broken": every, "other_world": every}  # 3 + 3 waves of 2
    looks = looks_file(runs, spec)
    looks.parent.mkdir(parents=True)
    look = {"look": 1, "comparisons": {"broken": {"n": 3, "verdict": "inferior"},
                                       "other_world": {"n": 3, "verdict": "open"}},
            "extend": {"comparisons": ["other_world"], "seeds": [4, 5]}}
    looks.write_text(json.dumps(look) + "\n")
    assert seeds() == {"text_only": every, "broken": [1, 2, 3], "other_world": every}
    assert seeds(cap=8)["other_world"] == list(range(1, 8))  # the planned wave to 5, one more to 7; 9 would pass 8
    assert seeds(cap=6)["other_world"] == [1, 2, 3, 4, 5]  # the planned wave only
    looks.write_text(json.dumps(look | {"extend": None}) + "\n")  # the procedure ended: nothing more
    assert seeds() == {"text_only": [1, 2, 3], "broken": [1, 2, 3], "other_world": [1, 2, 3]}


@pytest.mark.slow
def test_a_look_cut_short_by_a_kill_is_taken_again_and_the_file_stays_readable(tmp_path):
    """A launch killed while writing its look leaves half a line; the relaunch takes that look again, and the looks
    file reads whole (appending after the cut line would have fused the two into one unreadable line)."""
    import warnings

    from study.runstore import read_jsonl

    grid, protocol = write(tmp_path)
    runs = tmp_path / "runs"
    argv = ["sweep", "launch", str(grid), "--preset", "smoke", "--runs-dir", str(runs), "--workers", "2",
            "--until-decided", str(protocol), "--waves", "1"]
    assert main(argv) == 0
    looks = runs / "looks" / "decide_smoke__smoke.jsonl"
    whole = looks.read_text()
    looks.write_text(whole[: len(whole) // 2])  # killed mid-write: half the line, no newline
    with pytest.warns(UserWarning, match="corrupt record skipped"):
        assert main(argv) == 0  # the wave is trained: the relaunch looks again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (again,) = read_jsonl(looks)
    first = json.loads(whole)
    assert again["look"] == 1 and again["comparisons"] == first["comparisons"] and again["extend"] == first["extend"]


def test_status_shows_each_comparison_at_its_latest_look(tmp_path, capsys):
    """`sweep status --until-decided` ends with each comparison's numbers at its latest look, read from the looks
    file as a launch writes it: a comparison decided at look 1 shows look 1, one still open shows look 2."""
    from analysis.sequential import decide
    from sweeps.adaptive import decision_record, decisions_table, grid_comparisons, looks_file

    grid, protocol_path = write(tmp_path)
    spec, runs, protocol = load_spec(str(grid), "smoke"), tmp_path / "runs", load_protocol(protocol_path)
    runs.mkdir()
    assert decisions_table(runs, spec) == ""  # before the first look: nothing to show
    comparisons = grid_comparisons(spec, protocol)
    broken, other = comparisons["broken"], comparisons["other_world"]
    noisy = [0.01, -0.02, 0.03, 0.0, -0.01]

    def record(c, diffs, sizes):
        return decision_record(c, decide(diffs, sizes, protocol.plan(c), c.higher_is_better), sizes)

    looks = [{"look": 1, "at": "2026-12-07 09:00 UTC", "comparisons": {"broken": record(broken, [5.0, 5.1, 4.9], [3]),
                                         "other_world": record(other, noisy[:3], [3])},
              "extend": {"comparisons": ["other_world"], "seeds": [4, 5]}},
             {"look": 2, "at": "2026-12-07 10:00 UTC", "comparisons": {"other_world": record(other, noisy, [3, 5])},
              "extend": None}]
    looks_file(runs, spec).parent.mkdir()
    looks_file(runs, spec).write_text("".join(json.dumps(look) + "\n" for look in looks))
    assert main(["sweep", "status", str(grid), "--preset", "smoke", "--runs-dir", str(runs),
                 "--until-decided", str(protocol_path)]) == 0
    out = capsys.readouterr().out
    table = out.split("each comparison at its latest look:\n")[1]
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    assert rows["broken"][:4] == ["broken", "1", "3", "+5.0000"] and rows["broken"][-2] == "inferior"
    assert rows["other_world"][:5] == ["other_world", "2", "5", "+0.0020", "0.0086"]  # mean 0.002, sd 0.0192/sqrt 5
    assert rows["other_world"][-2] == looks[1]["comparisons"]["other_world"]["verdict"]
