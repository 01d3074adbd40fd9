"""The data-utilization part of the report: which fitted laws may be read at the paper's scale, and how arms that
differ only in their data regime are named when their runs are pooled for R*_D."""

import polars as pl

from analysis.runs import SAMPLES, D
from reports.data_use import pooled_name, reaches_paper_scale


def test_only_a_law_of_one_epoch_runs_is_read_at_the_paper_scale():
    one_epoch = pl.DataFrame({D: [1_000, 10_000], SAMPLES: [1_000, 10_000]})
    fixed = pl.DataFrame({D: [1_000, 10_000], SAMPLES: [160_000, 160_000]})  # beyond S every D is one experiment
    assert reaches_paper_scale(one_epoch)
    assert not reaches_paper_scale(fixed)
    assert not reaches_paper_scale(pl.concat([one_epoch, fixed]))
    assert reaches_paper_scale(pl.DataFrame({D: [1_000]}))  # a grid that does not vary samples seen


def test_arms_pooled_across_data_regimes_get_one_name_unless_one_is_marked():
    assert pooled_name(["text_only · fixed", "text_only · epoch"]) == "text_only"
    marked = ["semantic_input · fixed", "semantic_input · epoch [collapsed 1/9]"]
    assert pooled_name(marked) == " + ".join(marked)  # the mark belongs to one regime: keep both names
