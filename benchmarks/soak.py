"""A soak of the farm: many guests through one farm process, round after round, and what is
left behind. Not a timed test; a benchmark to read.

    .venv/bin/python benchmarks/soak.py [--rounds 4] [--repeat 1] [-j 2] [--out FILE]

Each round is an A/A run (the base variant against an identical copy) of every scenario,
run in this process through the farm's own `run()`, as `farm run` runs it. Printed per
round and in total: guests booted, infrastructure errors (cases with status `error`), false
regressions (any verdict other than `same` in an A/A run), and, before and after, this
process's open file descriptors, its threads, its live child processes, the farm's
temporary files and directories (socket directories, work trees, *.tmp, lock holders), the
QEMU processes on the machine, and memory (this process's resident size now and at peak;
the peak of its children, the pytest sessions). Targets: 0 errors, 0 false regressions, no
growth in any count.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.farmfile import load_farm  # noqa: E402
from orchestrator.options import RunOptions  # noqa: E402
from orchestrator.progress import Progress  # noqa: E402
from orchestrator.results import read_results  # noqa: E402
from orchestrator.run import run  # noqa: E402


def children() -> list[int]:
    """Live descendants of this process."""
    parent: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
                parent[int(p.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    mine, frontier = [], [os.getpid()]
    while frontier:
        kids = [pid for pid, pp in parent.items() if pp in frontier]
        mine += kids
        frontier = kids
    return mine


def qemus() -> int:
    n = 0
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "comm").read_text().startswith("qemu-system"):
                n += 1
        except OSError:
            pass
    return n


def temp_files(cache: Path) -> dict[str, int]:
    tmp = Path(tempfile.gettempdir())
    return {"socket_dirs": len([p for p in tmp.glob("farm-*") if p.is_dir()]),
            "work_trees": len([p for p in (cache / "work").glob("*") if p.is_dir()])
            if (cache / "work").is_dir() else 0,
            "tmp_files": len([p for p in cache.rglob("*.tmp") if "ccache" not in p.parts])
            + len(list(cache.glob("builds/.*"))) + len(list(cache.glob("images/.*")))}


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def snapshot(cache: Path) -> dict:
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "children": len(children()), "qemu_on_machine": qemus(), **temp_files(cache),
            "rss_mb": round(rss_kb() / 1024, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "children_peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def one_round(cfg, k: int, work: Path, args, quiet: Progress) -> dict:
    """Round k: an A/A run of every scenario, and what it left behind."""
    before = snapshot(cfg.cache)
    start = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        code = run(cfg, RunOptions(results=work / f"round-{k}", jobs=args.jobs,
                                   repeat=args.repeat), quiet)
    seconds = time.monotonic() - start
    time.sleep(2)  # let the last guests' processes be reaped before counting
    after = snapshot(cfg.cache)
    doc = read_results(work / f"round-{k}")
    errors = [c for c in doc.cases if c.status == "error"]
    false = [c for c in doc.comparison if c.verdict != "same"]
    return {"round": k, "exit": code, "guests": len([c for c in doc.cases if not c.parent]),
            "seconds": round(seconds), "infra_errors": len(errors),
            "false_verdicts": len(false),
            "false_regressions": sum(c.verdict == "regression" for c in false),
            "before": before, "after": after,
            "errors": [f"{c.id}: {c.message}" for c in errors][:10],
            "verdicts": [f"{c.scenario}: {c.verdict}: {c.detail}" for c in false][:10]}


def totals(rounds: list[dict], first: dict, last: dict, seconds: float) -> dict:
    return {"rounds": len(rounds), "guests": sum(r["guests"] for r in rounds),
            "seconds": round(seconds),
            "infra_errors": sum(r["infra_errors"] for r in rounds),
            "false_verdicts": sum(r["false_verdicts"] for r in rounds),
            "false_regressions": sum(r["false_regressions"] for r in rounds),
            "before": first, "after": last,
            "growth": {k: last[k] - first[k] for k in
                       ("fds", "threads", "children", "qemu_on_machine", "socket_dirs",
                        "work_trees", "tmp_files")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="repeats of each case per round")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    (work / "farm.yaml").write_text(textwrap.dedent(f"""\
        source: {{tarball: /usr/src/linux-source-6.12.tar.xz}}
        config: {{fragments: [{REPO / 'kernels/base.config'}]}}
        variants:
          baseline: {{}}
          baseline-copy: {{}}
        scenarios: {REPO / 'guest-tests/scenarios.yaml'}
        """))
    cfg = load_farm(work / "farm.yaml")
    quiet = Progress(stream=open(work / "progress.log", "w"))
    first = snapshot(cfg.cache)
    print("before:", json.dumps(first), flush=True)
    t0 = time.monotonic()
    rounds = []
    for k in range(1, args.rounds + 1):
        rounds.append(one_round(cfg, k, work, args, quiet))
        print(json.dumps(rounds[-1]), flush=True)
    total = totals(rounds, first, snapshot(cfg.cache), time.monotonic() - t0)
    last = total["after"]
    print("total:", json.dumps(total), flush=True)
    print(f"\n{total['guests']} guests in {total['rounds']} rounds, {total['seconds']} s: "
          f"{total['infra_errors']} infrastructure errors, {total['false_regressions']} false "
          f"regressions ({total['false_verdicts']} verdicts other than same); growth "
          + ", ".join(f"{k} {v:+d}" for k, v in total["growth"].items())
          + f"; this process's RSS {first['rss_mb']} -> {last['rss_mb']} MB (peak "
          f"{last['peak_rss_mb']} MB), its children's peak {last['children_peak_rss_mb']} MB")
    if args.out:
        args.out.write_text(json.dumps({"rounds": rounds, "total": total}, indent=1) + "\n")
    ok = total["infra_errors"] == 0 and total["false_regressions"] == 0 and not any(
        total["growth"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
