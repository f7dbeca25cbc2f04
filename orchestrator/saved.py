"""Result directories after the fact: `farm report` rewrites one's reports, `farm kcidb`
its kcidb.json, `farm compare` puts the verdicts of saved runs side by side, `farm merge`
joins the shards of one run. None of them builds or boots anything."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .caserecords import CaseSpec, case_id, plan_json, scenario_from_json
from .errors import UserError
from .farmfile import ORIGIN_RE, URL_RE
from .files import claim, write_json
from .inert import relative_link
from .outputs import report_dir, write, write_kcidb
from .progress import say
from .results import (
    RunInfo,
    VariantInfo,
    assemble,
    read_plan_of,
    read_results,
    read_run,
    write_run_json,
)


def report_saved(results: Path, fail_on: tuple[str, ...] | None = None) -> int:
    """`farm report DIR`: a saved run's reports written again, with the directory held so
    that no run writes it meanwhile."""
    if not (results / "run.json").is_file():
        raise UserError(f"{results}: not a farm result directory (no run.json)")
    lock = claim(results, fresh=False, flag="farm report", what="farm report")
    try:
        return report_dir(results, fail_on=fail_on)
    finally:
        lock.release()


def kcidb_saved(results: Path, origin: str = "", url: str = "",
                out: Path | None = None) -> int:
    """`farm kcidb DIR`: a saved run's kcidb.json, from its results.json."""
    if origin and not ORIGIN_RE.match(origin):
        raise UserError(f"--origin {origin[:80]!r}: KCIDB's origin is lower-case letters, "
                        "digits and _ (e.g. my_lab)")
    if url and not URL_RE.match(url):
        raise UserError(f"--url {url[:80]!r}: expected an http(s) URL where the result "
                        "directory is published, e.g. https://ci.example.org/farm/run-42")
    doc = read_results(results)
    path = write_kcidb(doc, results, origin, url, out)
    say(f"{path}: {len(doc.variants)} checkouts and builds, "
        f"{sum(1 + len(c.subcases or ()) for c in doc.cases)} tests\n")
    return 0


def _now_run(run: RunInfo, kind: str, now: datetime, **changes) -> RunInfo:
    """A run record of `farm compare` or `farm merge`, made now, from a run's record."""
    return run.but(id=f"{kind}-" + now.strftime("%Y%m%d-%H%M%S"), farm_version=__version__,
                   **changes)


def compare_dirs(dirs: list[Path], out: Path, base: str | None = None,
                 fail_on: tuple[str, ...] | None = None) -> int:
    """`farm compare`: the verdicts of saved result directories against each other, e.g. a
    baseline run of Monday and a patched run of Tuesday. Variants keep their names unless two
    directories share one; then each is named <directory>:<variant>. Builds and boots nothing."""
    resolved = _distinct(dirs, "farm compare", "; its runs would count as repeats of themselves")
    docs = [(d, read_results(d)) for d in resolved]
    layers = {d: tuple(doc.run.layers or ()) for d, doc in docs}
    if len(set(layers.values())) > 1:  # a debug kernel's cases against a plain one's
        raise UserError("farm compare: the runs were built with different config layers ("
                        + "; ".join(f"{d}: {', '.join(v) or 'none'}" for d, v in layers.items())
                        + "); compare runs of the same layers")
    labels = _labels(resolved)
    names = [v for _, doc in docs for v in doc.variants]
    clash = len(names) != len(set(names))
    variants: dict[str, VariantInfo] = {}
    cases, order = [], []
    for d, doc in docs:
        for v, info in doc.variants.items():
            # one base for all (--base): a run's own bases of several kernels do not carry over
            variants[f"{labels[d]}:{v}" if clash else v] = info.but(
                compared_from=str(d), **({"base": None} if info.base else {}))
        for c in doc.cases:
            name = f"{labels[d]}:{c.variant}" if clash else c.variant
            cases.append(replace(c, variant=name, id=case_id(name, c.scenario, c.repeat),
                                 logs={k: str(d / p) for k, p in c.log_paths.items()
                                       if relative_link(p)}))
            order.append(c.scenario)
    first_dir, first = docs[0]
    base = base or (f"{labels[first_dir]}:{first.run.base}" if clash else first.run.base)
    if base not in variants:
        raise UserError(f"--base {base!r} is not among the compared variants: "
                        f"{', '.join(variants)}")
    started = datetime.now(UTC)
    run = _now_run(first.run, "compare", started, base=base, seconds=0.0,
                   compared=[str(d) for d, _ in docs], started=started.timestamp(),
                   started_iso=started.isoformat(timespec="seconds"),
                   interrupted=any(doc.run.interrupted for _, doc in docs))
    if fail_on is not None:
        run = run.but(fail_on=list(fail_on))
    doc = assemble(run, variants, cases, list(dict.fromkeys(order)))
    lock = claim(out, fresh=True, flag="--out", what="farm compare")
    try:
        return write(doc, out)
    finally:
        lock.release()


def _labels(dirs: list[Path]) -> dict[Path, str]:
    """A short name for each directory that tells it from the others: its base name, or as
    many of its last path parts as it takes."""
    for depth in range(1, max(len(d.parts) for d in dirs) + 1):
        labels = {d: "/".join(d.parts[-depth:]) for d in dirs}
        if len(set(labels.values())) == len(dirs):
            return labels
    return {d: str(d) for d in dirs}


def _distinct(dirs: list[Path], command: str, why: str = "") -> list[Path]:
    """The directories, resolved, none given twice."""
    resolved = [d.resolve() for d in dirs]
    twice = sorted({str(d) for d in resolved if resolved.count(d) > 1})
    if twice:
        raise UserError(f"{command}: {', '.join(twice)} is given twice{why}")
    return resolved


def merge_dirs(dirs: list[Path], out: Path, *, absent_why: dict[int, str] | None = None,
               held: bool = False, interrupted: str | None = None) -> int:
    """`farm merge`: the shards of one run (`farm run --shard K/N`, e.g. one per CI job)
    joined into one result directory with one set of reports, as if one run had done it all.
    The shards must come from the same matrix and the same kernels. A shard that is missing
    leaves its cases in the merged run as errors ("not run"), so nothing vanishes quietly."""
    _distinct(dirs, "farm merge")
    shards = []
    for d in dirs:
        run, variants = read_run(d)
        read_results(d)  # a shard that never finished its reports is not merged
        if not run.shard:
            raise UserError(f"{d}: not a shard (it was run without --shard)")
        shards.append(_Shard(d.resolve(), run, variants))
    seen: dict[int, Path] = {}
    for shard in shards:
        _same_matrix(shard, shards[0], seen)
    lock = None if held else claim(out, fresh=True, flag="--out", what="farm merge")
    try:
        return _merge(shards, seen, out, absent_why or {}, interrupted)
    finally:
        if lock:
            lock.release()


class _Shard:
    def __init__(self, d: Path, run: RunInfo, variants: dict[str, VariantInfo]):
        self.dir, self.run, self.variants = d, run, variants
        self.index, self.count = run.shard["index"], run.shard["count"]
        self.scenarios = run.shard["scenarios"]


def _same_matrix(s: _Shard, first: _Shard, seen: dict[int, Path]) -> None:
    """A shard of the same run as the first: the same matrix, base, repeats and kernels,
    and not given twice."""
    if s.count != first.count or s.scenarios != first.scenarios:
        raise UserError(f"{s.dir} is shard {s.index}/{s.count} of another matrix than "
                        f"{first.dir} ({first.index}/{first.count})")
    if s.index in seen:
        raise UserError(f"shard {s.index}/{s.count} is given twice: {seen[s.index]} and "
                        f"{s.dir}")
    seen[s.index] = s.dir
    for key in ("base", "repeat"):
        if getattr(s.run, key) != getattr(first.run, key):
            raise UserError(f"{s.dir}: {key} {getattr(s.run, key)!r} differs from "
                            f"{first.dir}'s {getattr(first.run, key)!r}")
    if list(s.variants) != list(first.variants):
        raise UserError(f"{s.dir}: variants {', '.join(s.variants)} differ from "
                        f"{first.dir}'s {', '.join(first.variants)}")
    for v, info in s.variants.items():
        theirs = first.variants[v].build
        mine, theirs = info.build and info.build.key, theirs and theirs.key
        if mine and theirs and mine != theirs:
            raise UserError(f"variant {v} was built from other inputs in {s.dir} (build "
                            f"{mine}) than in {first.dir} (build {theirs})")


def _merge(shards: list[_Shard], seen: dict[int, Path], out: Path,
           absent_why: dict[int, str], interrupted: str | None) -> int:
    first = shards[0]
    plan: list[CaseSpec] = []
    for s in shards:
        _copy_tree(s.dir / "cases", out / "cases")
        plan += read_plan_of(s.dir)
    count = first.count
    absent = [k for k in range(1, count + 1) if k not in seen]
    missing = (f"not run: shard(s) {', '.join(f'{k}/{count}' for k in absent)} "
               "not among the merged directories")
    for k in absent:
        plan += [CaseSpec.planned(v, scenario_from_json(s, f"{first.dir}: shard"), r,
                                  not_run=absent_why.get(k, missing))
                 for s in first.scenarios[k - 1::count] for v in first.variants
                 for r in range(1, (first.run.repeat or 1) + 1)]
    run = _now_run(first.run, "merge", datetime.now(UTC), shard=None,
                   merged=[f"{s.index}/{s.count} {s.dir}"
                           for s in sorted(shards, key=lambda s: s.index)],
                   missing_shards=[f"{k}/{count}" for k in absent],
                   seconds=max(s.run.seconds or 0.0 for s in shards),
                   interrupted=interrupted or next(
                       (s.run.interrupted for s in shards if s.run.interrupted), False))
    write_json(out / "plan.json", plan_json(plan))
    write_run_json(out, run, first.variants)
    return report_dir(out, plan_missing="not run: its shard has no record of it")


def _copy_tree(src: Path, dest: Path) -> None:
    """Hard links where the file system allows, copies elsewhere: logs are never rewritten."""
    if not src.is_dir():
        return

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link, dirs_exist_ok=True)
