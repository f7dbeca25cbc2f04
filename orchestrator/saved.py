"""Result directories after the fact: `farm report` rewrites one's reports, `farm compare`
puts the verdicts of saved runs side by side, `farm merge` joins the shards of one run.
None of them builds or boots anything."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .coverage import report as coverage_report
from .errors import UserError
from .files import claim, os_error, write_json
from .records import CaseRecord, CaseSpec, case_id, plan_json, read_plan, scenario_from_json
from .report import write_reports
from .results import assemble, exit_code, load_cases, missing_cases


def say(text: str) -> None:
    """Print to stdout; a reader that has gone (`farm run | head`) changes nothing else: the
    run still writes its files and keeps its exit code."""
    try:
        print(text, end="", flush=True)
    except OSError:  # a closed pipe, a terminal that hung up
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def report_dir(results: Path, plan_missing: str = "not run",
               fail_on: tuple[str, ...] | None = None) -> int:
    """Gather a result directory's case files into results.json and write the reports;
    print the summary and return the exit code. Needs no kernel and no guest."""
    run_doc = _run_record(results)
    if fail_on is not None:
        run_doc["run"]["fail_on"] = list(fail_on)
    plan = read_plan(_load(results, "plan.json"), str(results / "plan.json")) \
        if (results / "plan.json").exists() else []
    cases = load_cases(results)
    cases += missing_cases(plan, cases, plan_missing)
    order = list(dict.fromkeys(spec.scenario.name for spec in plan))
    doc = assemble(run_doc["run"], run_doc["variants"], cases, run_doc["run"]["base"], order)
    cov = coverage_report(doc, results)
    if cov:
        doc["coverage"] = cov
    return _write(doc, results)


def _write(doc: dict, out: Path) -> int:
    """results.json and the reports; the summary is printed even when the disk is too full
    to keep it."""
    code = exit_code(doc)
    try:
        write_json(out / "results.json", doc)
        text = write_reports(doc, out, code)
    except OSError as e:
        from .report import summary
        say(summary(doc, code))
        raise os_error(e, f"writing the reports into {out}") from None
    say(text)
    return code


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
    from .kcidb import ORIGIN_RE, URL_RE
    from .report import write_kcidb
    if origin and not ORIGIN_RE.match(origin):
        raise UserError(f"--origin {origin[:80]!r}: KCIDB's origin is lower-case letters, "
                        "digits and _ (e.g. my_lab)")
    if url and not URL_RE.match(url):
        raise UserError(f"--url {url[:80]!r}: expected an http(s) URL where the result "
                        "directory is published, e.g. https://ci.example.org/farm/run-42")
    doc = _results(results)
    path = write_kcidb(doc, results, origin, url, out)
    say(f"{path}: {len(doc['variants'])} checkouts and builds, "
        f"{sum(1 + len(c.get('subcases') or []) for c in doc['cases'])} tests\n")
    return 0


def compare_dirs(dirs: list[Path], out: Path, base: str | None = None,
                 fail_on: tuple[str, ...] | None = None) -> int:
    """`farm compare`: the verdicts of saved result directories against each other, e.g. a
    baseline run of Monday and a patched run of Tuesday. Variants keep their names unless two
    directories share one; then each is named <directory>:<variant>. Builds and boots nothing."""
    resolved = _distinct(dirs, "farm compare", "; its runs would count as repeats of themselves")
    docs = [(d, _results(d)) for d in resolved]
    layers = {d: tuple(doc["run"].get("layers") or ()) for d, doc in docs}
    if len(set(layers.values())) > 1:  # a debug kernel's cases against a plain one's
        raise UserError("farm compare: the runs were built with different config layers ("
                        + "; ".join(f"{d}: {', '.join(v) or 'none'}" for d, v in layers.items())
                        + "); compare runs of the same layers")
    labels = _labels(resolved)
    names = [v for _, doc in docs for v in doc["variants"]]
    clash = len(names) != len(set(names))
    variants: dict[str, dict] = {}
    cases: list[dict] = []
    order: list[str] = []
    for d, doc in docs:
        for v, vdoc in doc["variants"].items():
            name = f"{labels[d]}:{v}" if clash else v
            variants[name] = {**vdoc, "from": str(d)}
        for c in doc["cases"]:
            name = f"{labels[d]}:{c['variant']}" if clash else c["variant"]
            logs = {k: str(d / p) for k, p in c.get("logs", {}).items()}
            cases.append({**c, "variant": name, "id": case_id(name, c["scenario"], c["repeat"]),
                          "logs": logs})
            order.append(c["scenario"])
    first_dir, first = docs[0]
    base = base or (f"{labels[first_dir]}:{first['run']['base']}" if clash
                    else first["run"]["base"])
    if base not in variants:
        raise UserError(f"--base {base!r} is not among the compared variants: "
                        f"{', '.join(variants)}")
    started = datetime.now(UTC)
    run_meta = {**first["run"], "id": "compare-" + started.strftime("%Y%m%d-%H%M%S"),
                "farm_version": __version__, "base": base, "seconds": 0.0,
                "compared": [str(d) for d, _ in docs], "started": started.timestamp(),
                "started_iso": started.isoformat(timespec="seconds"),
                "interrupted": any(doc["run"].get("interrupted") for _, doc in docs)}
    if fail_on is not None:
        run_meta["fail_on"] = list(fail_on)
    doc = assemble(run_meta, variants, cases, base, list(dict.fromkeys(order)))
    lock = claim(out, fresh=True, flag="--out", what="farm compare")
    try:
        return _write(doc, out)
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


def _run_record(d: Path) -> dict:
    """A result directory's run.json, checked enough that reporting it cannot crash."""
    doc = _load(d, "run.json")
    if not isinstance(doc.get("run"), dict) or not isinstance(
            doc.get("variants"), dict) or not isinstance(doc["run"].get("base"), str):
        raise UserError(f"{d / 'run.json'}: not a farm run record (no run, base or variants)")
    return doc


def _load(d: Path, name: str) -> dict:
    try:
        doc = json.loads((d / name).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{d}: not a farm result directory ({name}: {e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{d / name}: not a farm record (a JSON object was expected)")
    return doc


def _results(d: Path) -> dict:
    """A saved run's results.json, checked enough that comparing it cannot crash."""
    doc = _load(d, "results.json")
    run, variants, cases = doc.get("run"), doc.get("variants"), doc.get("cases")
    if not (isinstance(run, dict) and isinstance(run.get("base"), str)
            and isinstance(variants, dict) and isinstance(cases, list)):
        raise UserError(f"{d / 'results.json'}: not a farm results record (no run, base, "
                        "variants or cases)")
    doc["cases"] = [CaseRecord.from_json(c, f"{d / 'results.json'} (case {i})").to_json()
                    for i, c in enumerate(cases)]
    return doc


def merge_dirs(dirs: list[Path], out: Path, *, absent_why: dict[int, str] | None = None,
               held: bool = False, interrupted: str | None = None) -> int:
    """`farm merge`: the shards of one run (`farm run --shard K/N`, e.g. one per CI job)
    joined into one result directory with one set of reports, as if one run had done it all.
    The shards must come from the same matrix and the same kernels. A shard that is missing
    leaves its cases in the merged run as errors ("not run"), so nothing vanishes quietly."""
    _distinct(dirs, "farm merge")
    shards = []
    for d in dirs:
        run_doc = _run_record(d)
        _results(d)  # a shard that never finished its reports is not merged
        shard = run_doc["run"].get("shard")
        if not shard:
            raise UserError(f"{d}: not a shard (it was run without --shard)")
        shards.append((d.resolve(), run_doc, shard))
    first_dir, first, first_shard = shards[0]
    seen: dict[int, Path] = {}
    for d, run_doc, shard in shards:
        if shard["count"] != first_shard["count"] or shard["scenarios"] != first_shard["scenarios"]:
            raise UserError(f"{d} is shard {shard['index']}/{shard['count']} of another matrix "
                            f"than {first_dir} ({first_shard['index']}/{first_shard['count']})")
        if shard["index"] in seen:
            raise UserError(f"shard {shard['index']}/{shard['count']} is given twice: "
                            f"{seen[shard['index']]} and {d}")
        seen[shard["index"]] = d
        for key in ("base", "repeat"):
            if run_doc["run"].get(key) != first["run"].get(key):
                raise UserError(f"{d}: {key} {run_doc['run'].get(key)!r} differs from "
                                f"{first_dir}'s {first['run'].get(key)!r}")
        if list(run_doc["variants"]) != list(first["variants"]):
            raise UserError(f"{d}: variants {', '.join(run_doc['variants'])} differ from "
                            f"{first_dir}'s {', '.join(first['variants'])}")
        for v, vdoc in run_doc["variants"].items():
            mine, theirs = (vdoc.get("build") or {}).get("key"), \
                (first["variants"][v].get("build") or {}).get("key")
            if mine and theirs and mine != theirs:
                raise UserError(f"variant {v} was built from other inputs in {d} (build "
                                f"{mine}) than in {first_dir} (build {theirs})")

    lock = None if held else claim(out, fresh=True, flag="--out", what="farm merge")
    try:
        return _merge(shards, seen, out, absent_why or {}, interrupted)
    finally:
        if lock:
            lock.release()


def _merge(shards: list, seen: dict[int, Path], out: Path, absent_why: dict[int, str],
           interrupted: str | None) -> int:
    first_dir, first, first_shard = shards[0]
    plan: list[CaseSpec] = []
    for d, _, _ in shards:
        _copy_tree(d / "cases", out / "cases")
        if (d / "plan.json").is_file():
            plan += read_plan(_load(d, "plan.json"), str(d / "plan.json"))
    count = first_shard["count"]
    absent = [k for k in range(1, count + 1) if k not in seen]
    if absent:
        missing = (f"not run: shard(s) {', '.join(f'{k}/{count}' for k in absent)} "
                   "not among the merged directories")
        for k in absent:
            why = absent_why.get(k, missing)
            plan += [CaseSpec.planned(v, scenario_from_json(s, f"{first_dir}: shard"), r,
                                      not_run=why)
                     for s in first_shard["scenarios"][k - 1::count]
                     for v in first["variants"]
                     for r in range(1, first["run"].get("repeat", 1) + 1)]
    started = datetime.now(UTC)
    meta = {**first["run"], "id": "merge-" + started.strftime("%Y%m%d-%H%M%S"),
            "farm_version": __version__, "shard": None,
            "merged": [f"{s['index']}/{s['count']} {d}" for d, _, s in
                       sorted(shards, key=lambda x: x[2]["index"])],
            "missing_shards": [f"{k}/{count}" for k in absent],
            "seconds": max(r["run"].get("seconds", 0.0) for _, r, _ in shards),
            "interrupted": interrupted or next(
                (r["run"]["interrupted"] for _, r, _ in shards if r["run"].get("interrupted")),
                False)}
    write_json(out / "plan.json", plan_json(plan))
    write_json(out / "run.json", {"run": meta, "variants": first["variants"]})
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
