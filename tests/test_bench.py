"""The benchmarks run: a smoke run (`--smoke`, one round of each, no figure asserted) of those
that take seconds, on the real default kernel, so that a change of the farm's interfaces that
breaks them fails here and not the next time someone measures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.e2e


def test_the_case_and_cache_benchmarks_run(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, REPO / "benchmarks" / "bench.py", "--smoke",
                           "--only", "unchanged,case", "--out", out],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["unchanged"]["median_s"] >= 0
    case = doc["case"]
    assert case["boot"] in ("pvh", "bzimage")
    for key in ("snapshot_case_s", "cold_case_s", "bare_qemu_s", "snapshot_boot_and_save_s"):
        assert case[key] > 0, (key, case)
    assert case["snapshot_mb"] > 1  # a saved guest of 256 MB: its touched memory at least
