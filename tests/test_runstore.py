"""The run store's JSON-lines records: a line cut short by a killed writer costs that line only."""

import pytest

from study.runstore import RunStore, read_jsonl


def test_a_record_after_a_cut_line_starts_its_own_line(tmp_path):
    store = RunStore(tmp_path)
    store.append("sweep_attempts.jsonl", {"from_step": 0})
    path = tmp_path / "sweep_attempts.jsonl"
    path.write_text(path.read_text() + '{"from_step": 25')  # the next attempt's writer was killed mid-line
    store.append("sweep_attempts.jsonl", {"from_step": 50})
    with pytest.warns(UserWarning, match="sweep_attempts.jsonl:2: corrupt record skipped"):
        assert read_jsonl(path) == [{"from_step": 0}, {"from_step": 50}]
    store.append("sweep_attempts.jsonl", {"from_step": 75})  # after a whole line: no blank line added
    assert path.read_text().endswith('{"from_step": 50}\n{"from_step": 75}\n')
