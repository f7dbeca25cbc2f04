"""End to end: a patch author's git branch, run and bisected with no farm.yaml edited. A real
git repository is made of Debian's 6.12 tree, and a branch `demo` on it carries two commits
(kernels/bisect-demo.yaml's series: a comment change, then the demonstration patch):
`farm run --git REPO --commits base..demo` finds the regression, `farm bisect` names the
second commit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import validate

from orchestrator.farmfile import load_farm
from orchestrator.progress import Progress
from orchestrator.runner import Runner
from orchestrator.source import prepare_source

REPO = Path(__file__).parent.parent
pytestmark = pytest.mark.e2e
SERIES = [REPO / "kernels/patches/demo-series/0001-mm-memory-failure-reword-the-soft-offline-note"
                 ".patch",
          next((REPO / "kernels/patches/poison-clean-ptes").glob("*.patch"))]
SCENARIOS = "pagecache-clean-madvise,anon-madvise"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=Farm Test", "-c", "user.email=t@localhost",
                           "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def linux(tmp_path_factory) -> Path:
    """Debian's 6.12 tree as a git repository (hard links to the farm's unpacked copy, which
    git only reads: the commits are made in the index), tag `base`, branch `demo`."""
    cfg = load_farm(REPO / "farm.yaml")
    src = prepare_source(cfg.source, cfg.cache, Runner(), Progress(open(os.devnull, "w"))).path
    repo = tmp_path_factory.mktemp("git") / "linux"
    subprocess.run(["cp", "-al", str(src), str(repo)], check=True)
    git(repo, "init", "-q", "-b", "master")
    git(repo, "add", "-A", "-f")  # Debian's .gitignore ignores its whole top level
    git(repo, "commit", "-qm", "linux 6.12 as Debian ships it")
    git(repo, "tag", "base")
    git(repo, "checkout", "-qb", "demo")
    for patch in SERIES:
        git(repo, "apply", "--cached", str(patch))
        subject = next(ln for ln in patch.read_text().splitlines() if ln.startswith("Subject:"))
        git(repo, "commit", "-qm", subject.removeprefix("Subject: [PATCH] "))
    return repo


def farm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_branch_runs_against_its_base_from_the_command_line(linux, tmp_path):
    out = tmp_path / "run"
    proc = farm("run", "--git", str(linux), "--commits", "base..demo", "--scenarios", SCENARIOS,
                "--confirm", "0", "-j", "2", "--results", str(out))
    assert proc.returncode == 1, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert list(doc["variants"]) == ["baseline", "demo"]
    names = [Path(p).name for p in doc["variants"]["demo"]["patches"]]
    shas = git(linux, "rev-list", "--reverse", "base..demo").split()
    assert [n[:12] for n in names] == [s[:12] for s in shas]
    assert names[1].endswith("-mm-memory-failure-keep-poison-entries-in-mappings-of.patch")
    verdicts = {c["scenario"]: c["verdict"] for c in doc["comparison"]}
    assert verdicts == {"pagecache-clean-madvise": "regression", "anon-madvise": "same"}
    assert doc["run"]["source"]["describe"] == f"git:{linux}@base"


def test_farm_bisect_walks_the_branchs_commits(linux, tmp_path):
    out = tmp_path / "bisect"
    proc = farm("bisect", "--git", str(linux), "--commits", "base..demo", "--scenarios",
                SCENARIOS, "--repeat", "1", "--results", str(out))
    assert proc.returncode == 1, proc.stderr[-3000:]
    doc = json.loads((out / "bisect.json").read_text())
    (r,) = doc["results"]
    assert (r["scenario"], r["status"], r["first_bad"]) == ("pagecache-clean-madvise",
                                                            "found", 2)
    assert Path(r["patch"]).name[:12] == git(linux, "rev-parse", "demo")[:12]
    assert r["subject"].startswith("mm/memory-failure: keep poison entries")
    assert "access_signal: None -> 'BUS_MCEERR_AR'" in r["changed"]
    assert doc["builds"] == [0, 1, 2]
    assert "anon-madvise does not regress here" in proc.stderr
    assert "| pagecache-clean-madvise | 2/2 |" in proc.stdout
    validate(out / "bisect.xml")
