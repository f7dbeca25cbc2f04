"""report.html in a real browser: headless Chromium renders it, its DOM is read back, and
screenshots of its first screen, for the recorded A/B run with regressions and for an A/A run
made of its base's cases, are kept with the test run."""

import json
import re
import shutil
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.html_report import report_html
from orchestrator.results import assemble, read_results
from orchestrator.runner import Runner

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


@pytest.fixture
def page(data, tmp_path):
    assert CHROMIUM, "chromium is missing: scripts/setup.sh --test installs it"
    run = tmp_path / "run"
    shutil.copytree(data / "run-ab", run)
    main(["report", str(run)])
    doc = read_results(run)
    i, failed = next((i, c) for i, c in enumerate(doc.cases) if c.status == "fail")
    cases = list(doc.cases)  # what a guest could print ends up in messages and logs
    cases[i] = replace(failed, message=HOSTILE, observed={**failed.observed,
                                                           "recovery": [HOSTILE]})
    (run / "report.html").write_text(report_html(replace(doc, cases=tuple(cases))))
    return run / "report.html"


def chromium(tmp_path: Path, *args: str) -> str:
    out = Runner().run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                       timeout=120)
    return out.output


def test_report_renders_with_guest_text_kept_as_text(page, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert "<title>hwpoison farm 20261127-093505</title>" in dom  # no script ran
    assert "<img" not in dom and "<script" not in dom
    assert "&lt;img src=x onerror=" in dom
    assert dom.count('<td class="v-regression">') == 2  # the matrix
    assert dom.count('<span class="v-regression">regression</span>') == 2  # side by side
    assert 'href="cases/baseline/anon-madvise/r1/console.log"' in dom
    assert "Verdicts other than same, side by side" in dom


def test_report_screenshot(page, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path, "--window-size=1400,1200", f"--screenshot={shot}", page.as_uri())
    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1400, 1200)
    assert shot.stat().st_size > 50_000, "a blank page compresses to almost nothing"
    print(f"screenshot: {shot}")


def test_the_first_screen_answers_first_totals_grid_then_what_changed(page, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    order = [dom.index(x) for x in ('id="totals"', 'id="grid"', 'id="attention"',
                                    'id="errors"', 'id="matrix"', 'id="builds"')]
    assert order == sorted(order)
    doc = json.loads((page.parent / "results.json").read_text())
    scenarios = {c["scenario"] for c in doc["cases"]}
    boxes = re.findall(r'<a class="box v-(\w+) s-\w+" href="#row-([\w.-]+)"', dom)
    assert sorted(s for _, s in boxes) == sorted(scenarios)  # one box per scenario
    assert all(f'<tr id="row-{s}"' in dom for s in scenarios)  # each a link to its row
    assert sorted(s for v, s in boxes if v == "regression") == [
        "pagecache-clean-host-srao", "pagecache-clean-madvise"]
    assert "2 regression" in dom and "Verdicts other than same, side by side (2)" in dom
    assert '<input type="checkbox" id="notsame">' in dom
    quiet = dom.count('class="quiet"')
    assert quiet == len(scenarios) - 2  # what the checkbox hides: the same, passing rows


def aa_page(data: Path, tmp_path: Path) -> Path:
    """An A/A run: the recorded run's base cases, twice, as baseline and baseline-again."""
    doc = read_results(data / "run-ab")
    base = doc.of_variant("baseline")
    again = [replace(c, variant="baseline-again",
                     id=c.id.replace("baseline::", "baseline-again::")) for c in base]
    variants = {"baseline": doc.variants["baseline"],
                "baseline-again": doc.variants["baseline"]}
    aa = assemble(doc.run, variants, base + again)
    out = tmp_path / "aa"
    out.mkdir()
    (out / "report.html").write_text(report_html(aa))
    return out / "report.html"


@pytest.mark.parametrize("which", ["ab", "aa"])
def test_first_screen_screenshots(which, page, data, tmp_path):
    target = page if which == "ab" else aa_page(data, tmp_path)
    dom = chromium(tmp_path, "--dump-dom", target.as_uri())
    if which == "aa":
        assert "box v-regression" not in dom and "10 same" in dom
        assert "Verdicts other than same, side by side (0)" in dom
    shot = tmp_path / f"first-screen-{which}.png"
    chromium(tmp_path, "--window-size=1400,900", f"--screenshot={shot}", target.as_uri())
    header = shot.read_bytes()[:24]
    assert struct.unpack(">II", header[16:24]) == (1400, 900)
    assert shot.stat().st_size > 30_000, "a blank page compresses to almost nothing"
    print(f"screenshot of the first screen ({which}): {shot}")
