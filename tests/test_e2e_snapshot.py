"""End to end: snapshot boot. A sample of every kind of case (host SRAO and SRAR with their CPL
checks, two vCPUs, a panic, the ext2 and swap disks, the throttled writeback disk, a
kernel selftest with its KTAP, a race), each case twice, runs on the base kernel booted cold
and restored from snapshots, with the same race seed; every case is judged the same and
observes the same, observable by observable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml
from tests_support import check_junit

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.e2e
SAMPLE = ("anon-madvise,pagecache-clean-host-srar,anon-host-srao-2cpus,anon-host-srar-in-kernel,"
          "swap-clean-madvise,writeback-madvise,kselftest-hugetlb-soft-offline,race-ksm-fork")
# What differs from one boot to another whatever the boot: process ids, page frame numbers,
# and a race's outcome counts (its invariants, race.*, are compared)
VOLATILE = {"sigbus_sent", "mce_killed", "pfn_before", "pfn_after", "race", "injections"}


def farm(results: Path, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "--variants", "baseline",
         "--scenarios", SAMPLE, "--seed", "777", "--confirm", "0", "-j", "2",
         "--repeat", "2",  # no shape with one case, which would boot cold (case.alone_cold)
         "--results", str(results), *args],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((results / "results.json").read_text())


def test_cases_restored_from_snapshots_behave_as_cold_booted_ones(tmp_path):
    cold = farm(tmp_path / "cold", "--boot", "cold")
    snap = farm(tmp_path / "snap")
    by_id = {c["id"]: c for c in cold["cases"]}
    assert set(by_id) == {c["id"] for c in snap["cases"]}
    assert len(by_id) > 2 * len(SAMPLE.split(","))
    for c in snap["cases"]:
        if c.get("parent"):
            continue  # a KTAP test: its program's case is compared
        was = by_id[c["id"]]
        assert (c["boot"], was["boot"]) == ("snapshot", "cold"), (c["id"], c.get("boot_why"))
        assert c["status"] == was["status"] == "pass", (c["id"], c["message"], was["message"])
        differ = {k: (was["observed"].get(k), v) for k, v in c["observed"].items()
                  if k not in VOLATILE and was["observed"].get(k) != v}
        assert not differ, (c["id"], differ)
        console = (tmp_path / "snap" / c["logs"]["console"]).read_text()
        assert "Linux version" in console and "[farm: the lines above are the boot" in console
        qemu = (tmp_path / "snap" / c["logs"]["qemu"]).read_text()
        assert "-incoming defer" in qemu and "# boot: restored from snapshot" in qemu
        assert "# confined: uid=" in qemu  # restored guests run in the sandbox too
    # one snapshot per shape: the plain guest, the ext2 disk, the throttled disk, the swap
    # disk, two vCPUs, two vCPUs with the disk (the race); the kselftest's initramfs is
    # the plain guest's
    shapes = {line.split("snapshot ")[1].split(";")[0]
              for c in snap["cases"] if not c.get("parent")
              for line in (tmp_path / "snap" / c["logs"]["qemu"]).read_text().splitlines()
              if line.startswith("# boot: restored")}
    assert 4 <= len(shapes) <= 7, shapes
    assert "- guests: " in (tmp_path / "snap" / "summary.md").read_text()
    check_junit(tmp_path / "snap", snap)
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "snap" / "junit.xml"))))
    assert {p.name: p.value for p in suite.properties()}["guest_boot"] == "snapshot"
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "cold" / "junit.xml"))))
    assert {p.name: p.value for p in suite.properties()}["guest_boot"] == "cold"
    # the snapshots went with the run's own directory
    sockets = {c["sockets"] for c in json.loads((tmp_path / "snap" / "plan.json").read_text())[
        "cases"]}
    assert len(sockets) == 1 and not Path(sockets.pop()).exists()
