"""The documentation: its generated pages are current, it builds strictly (a broken link or a missing image fails),
and in the browser every image of its first page and of a demo report loads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from reports.build import build_report
from tests.browser import image_widths
from tests.run_records import demo_runs

ROOT = Path(__file__).resolve().parents[1]


def _build(source: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-q", "-b", "html",
                           str(source), str(out)], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = _build(ROOT / "docs", out)
    assert done.returncode == 0, done.stderr
    return out


def test_generated_pages_are_current():
    """The config and CLI references and the benchmark tables equal what scripts/docs_reference.py writes now."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_reference.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_site_has_every_page_and_the_references(site: Path):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for page in ("index.html", "getting-started.html", "concepts.html", "running-studies.html", "full-scale.html",
                 "analysis.html", "reference/config.html", "reference/cli.html", "architecture.html", "api.html",
                 "results/index.html", "benchmarks.html", "results/cpu-v2/report.html"):
        assert page in pages
    config = (site / "reference" / "config.html").read_text()
    assert "objective.pixel_grad_to_llm" in config and "masking.distribution" in config
    cli = (site / "reference" / "cli.html").read_text()
    assert 'id="unihetero-sweep-launch"' in cli and "until-decided" in cli
    api = (site / "api.html").read_text()
    assert "load_config" in api and "RunConfig" in api  # generated from the docstrings


@pytest.mark.slow
def test_a_broken_link_or_a_missing_image_fails_the_build(tmp_path: Path):
    import shutil

    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("_build"))
    for bad in ("[a page that is not there](no-such-page.md)", "![a figure that is not there](figures/none.png)"):
        page = docs / "concepts.md"
        page.write_text((ROOT / "docs" / "concepts.md").read_text() + f"\n{bad}\n")
        done = _build(docs, tmp_path / "out")
        assert done.returncode != 0 and "concepts.md" in done.stderr, bad


@pytest.mark.slow
def test_every_image_of_the_first_page_loads(site: Path, tmp_path: Path):
    figures = len(re.findall(r"^```\{figure\}", (ROOT / "docs" / "index.md").read_text(), re.MULTILINE))
    widths = image_widths(site / "index.html", tmp_path)
    assert figures >= 1 and len(widths) >= figures
    assert all(width > 0 for _, width in widths), widths


def test_every_image_of_a_demo_report_loads(tmp_path: Path):
    demo_runs(tmp_path / "runs", 0.62)
    html = build_report(tmp_path / "runs", tmp_path / "report")
    expected = (tmp_path / "report" / "report.md").read_text().count("![")
    widths = image_widths(html, tmp_path)
    assert expected >= 1 and len(widths) >= expected
    assert all(width > 0 for _, width in widths), widths


def test_the_image_check_sees_an_image_that_did_not_load(tmp_path: Path):
    page = tmp_path / "page.html"
    page.write_text('<html><body><img src="there.png"><img src="missing.png"></body></html>')
    (tmp_path / "there.png").write_bytes((ROOT / "docs" / "figures" / "demo" / "bars.png").read_bytes())
    assert [w > 0 for _, w in image_widths(page, tmp_path)] == [True, False]
