"""What the farm writes for a recorded run, made by a given checkout's `farm` command: the
reports of `farm report`, `farm kcidb`, `farm compare` and `farm merge` over copies of a
recorded result directory, normalized where a run's own place and clock show through (the
copy's path, a comparison's or merge's id and start time). It imports nothing of the farm,
so that the same functions give the files of an older checkout (the goldens under
tests/data/golden/, by `python tests/golden.py --code DIR`) and of this one (the test)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
RECORDED = ("run-ab", "run-mixed")  # result directories of real runs, under tests/data/
REPORTS = ("results.json", "junit.xml", "compare.xml", "summary.md", "report.html",
           "kcidb.json")


def farm(code: Path, args: list[str], cwd: Path) -> tuple[int, str]:
    """`farm ARGS` of the checkout `code`, run as a user runs it: (exit code, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, check=False)
    if res.returncode not in (0, 1, 3):
        raise RuntimeError(f"farm {' '.join(args)}: exit {res.returncode}: {res.stderr}")
    return res.returncode, res.stdout


def split(run: Path, dest: Path, n: int) -> list[Path]:
    """The run as the N result directories `farm run --shard K/N` leaves (every N-th scenario
    from the K-th, with all its variants and repeats)."""
    run_doc = json.loads((run / "run.json").read_text())
    plan = json.loads((run / "plan.json").read_text())["cases"]
    scenarios = list({spec["scenario"]["name"]: spec["scenario"] for spec in plan}.values())
    dirs = []
    for k in range(1, n + 1):
        d = dest / f"shard-{k}"
        names = {s["name"] for s in scenarios[k - 1::n]}
        mine = [s for s in plan if s["scenario"]["name"] in names]
        for spec in mine:
            if (run / spec["dir"]).is_dir():
                shutil.copytree(run / spec["dir"], d / spec["dir"])
        d.mkdir(parents=True, exist_ok=True)
        meta = {**run_doc["run"], "shard": {"index": k, "count": n, "scenarios": scenarios}}
        (d / "run.json").write_text(json.dumps({**run_doc, "run": meta}))
        (d / "plan.json").write_text(json.dumps({"cases": mine}))
        dirs.append(d)
    return dirs


def _normalized(text: str, tmp: Path, clock: list[str]) -> str:
    text = text.replace(str(tmp), "@TMP@")
    for value in clock:
        text = text.replace(value, "@NOW@")
    return re.sub(r"\b(compare|merge)-\d{8}-\d{6}\b", r"\1-@NOW@", text)


def _clock(out: Path) -> list[str]:
    """How a comparison's or merge's own start time is written in its files."""
    run = json.loads((out / "results.json").read_text())["run"]
    started = run["started"]
    return [datetime.fromtimestamp(started, UTC).isoformat(), run["started_iso"],
            repr(started), json.dumps(started)]


def outputs(code: Path, name: str, tmp: Path) -> dict[str, str]:
    """Every file the four commands write for tests/data/<name>, and what each printed, by
    the checkout `code`: {"report/results.json": text, "report/stdout": text, ...}."""
    src, got = DATA / name, {}

    def copy(to: Path) -> Path:
        shutil.copytree(src, to)
        return to

    def collect(what: str, d: Path, names: tuple[str, ...], code_out: tuple[int, str],
                clock: list[str]) -> None:
        for f in names:
            got[f"{what}/{f}"] = _normalized((d / f).read_text(), tmp, clock)
        got[f"{what}/stdout"] = _normalized(f"exit {code_out[0]}\n{code_out[1]}", tmp, clock)

    d = copy(tmp / "report" / name)
    collect("report", d, REPORTS, farm(code, ["report", str(d)], tmp), [])
    d = copy(tmp / "kcidb" / name)
    farm(code, ["report", str(d)], tmp)
    res = farm(code, ["kcidb", str(d), "--origin", "my_lab", "--url",
                      "https://ci.example.org/farm/42", "--out", str(d / "lab.json")], tmp)
    collect("kcidb", d, ("lab.json",), res, [])
    sides = [copy(tmp / "compare" / side / name) for side in ("monday", "tuesday")]
    for side in sides:
        farm(code, ["report", str(side)], tmp)
    out = tmp / "compare" / "out"
    res = farm(code, ["compare", *map(str, sides), "--out", str(out)], tmp)
    collect("compare", out, REPORTS, res, _clock(out))
    shards = split(src, tmp / "merge", 3)
    for s in shards:
        farm(code, ["report", str(s)], tmp)
    out = tmp / "merge" / "out"
    res = farm(code, ["merge", *map(str, reversed(shards)), "--out", str(out)], tmp)
    collect("merge", out, REPORTS, res, _clock(out))
    return got


def main() -> None:
    p = argparse.ArgumentParser(description="write tests/data/golden/ with a checkout's farm")
    p.add_argument("--code", type=Path, required=True, help="the checkout whose farm writes them")
    p.add_argument("--tmp", type=Path, required=True, help="an empty scratch directory")
    args = p.parse_args()
    for name in RECORDED:
        tmp = args.tmp.resolve() / name
        for key, text in outputs(args.code.resolve(), name, tmp).items():
            dest = GOLDEN / name / key
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)


if __name__ == "__main__":
    main()
