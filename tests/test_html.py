"""report.html in a real browser: headless Chromium renders it, its DOM is read back, and a
screenshot is kept with the test run."""

import json
import shutil
import struct
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.report import report_html
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
    doc = json.loads((run / "results.json").read_text())
    failed = next(c for c in doc["cases"] if c["status"] == "fail")
    failed["message"] = HOSTILE  # what a guest could print ends up in messages and logs
    failed["observed"]["recovery"] = [HOSTILE]
    (run / "report.html").write_text(report_html(doc))
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
