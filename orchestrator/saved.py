"""Result directories after the fact: `farm report` rewrites one's reports, `farm compare`
puts the verdicts of saved runs side by side, `farm merge` joins the shards of one run.
None of them builds or boots anything."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from . import __version__
from .errors import UserError
from .report import write_reports
from .results import assemble, exit_code, load_cases, missing_cases, write_json


def report_dir(results: Path, plan_missing: str = "not run") -> int:
    """Gather a result directory's case files into results.json and write the reports;
    print the summary and return the exit code. Needs no kernel and no guest."""
    run_doc = json.loads((results / "run.json").read_text())
    plan_path = results / "plan.json"
    plan = json.loads(plan_path.read_text())["cases"] if plan_path.exists() else []
    cases = load_cases(results)
    cases += missing_cases(plan, cases, plan_missing)
    order = list(dict.fromkeys(spec["scenario"]["name"] for spec in plan))
    doc = assemble(run_doc["run"], run_doc["variants"], cases, run_doc["run"]["base"], order)
    code = exit_code(doc)
    write_json(results / "results.json", doc)
    print(write_reports(doc, results, code), end="", flush=True)
    return code


def compare_dirs(dirs: list[Path], out: Path, base: str | None = None) -> int:
    """`farm compare`: the verdicts of saved result directories against each other, e.g. a
    baseline run of Monday and a patched run of Tuesday. Variants keep their names unless two
    directories share one; then each is named <directory>:<variant>. Builds and boots nothing."""
    docs = [(d.resolve(), _load(d, "results.json")) for d in dirs]
    names = [v for _, doc in docs for v in doc["variants"]]
    clash = len(names) != len(set(names))
    variants: dict[str, dict] = {}
    cases: list[dict] = []
    order: list[str] = []
    for d, doc in docs:
        for v, vdoc in doc["variants"].items():
            name = f"{d.name}:{v}" if clash else v
            variants[name] = {**vdoc, "from": str(d)}
        for c in doc["cases"]:
            name = f"{d.name}:{c['variant']}" if clash else c["variant"]
            logs = {k: str(d / p) for k, p in c.get("logs", {}).items()}
            cases.append({**c, "variant": name, "id": f"{name}::{c['scenario']}::r{c['repeat']}",
                          "logs": logs})
            order.append(c["scenario"])
    first_dir, first = docs[0]
    base = base or (f"{first_dir.name}:{first['run']['base']}" if clash else first["run"]["base"])
    if base not in variants:
        raise UserError(f"--base {base!r} is not among the compared variants: "
                        f"{', '.join(variants)}")
    started = datetime.now(UTC)
    run_meta = {**first["run"], "id": "compare-" + started.strftime("%Y%m%d-%H%M%S"),
                "farm_version": __version__, "base": base, "seconds": 0.0,
                "compared": [str(d) for d, _ in docs], "started": started.timestamp(),
                "started_iso": started.isoformat(timespec="seconds"),
                "interrupted": any(doc["run"].get("interrupted") for _, doc in docs)}
    doc = assemble(run_meta, variants, cases, base, list(dict.fromkeys(order)))
    code = exit_code(doc)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", doc)
    print(write_reports(doc, out, code), end="", flush=True)
    return code


def _load(d: Path, name: str) -> dict:
    try:
        return json.loads((d / name).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{d}: not a farm result directory ({name}: {e})") from None


def merge_dirs(dirs: list[Path], out: Path) -> int:
    """`farm merge`: the shards of one run (`farm run --shard K/N`, e.g. one per CI job)
    joined into one result directory with one set of reports, as if one run had done it all.
    The shards must come from the same matrix and the same kernels. A shard that is missing
    leaves its cases in the merged run as errors ("not run"), so nothing vanishes quietly."""
    shards = []
    for d in dirs:
        run_doc = _load(d, "run.json")
        _load(d, "results.json")  # a shard that never finished its reports is not merged
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

    out.mkdir(parents=True, exist_ok=True)
    if (out / "cases").exists():
        raise UserError(f"{out} already holds cases; merge into a new directory")
    plan: list[dict] = []
    for d, _, _ in shards:
        _copy_tree(d / "cases", out / "cases")
        if (d / "plan.json").is_file():
            plan += _load(d, "plan.json")["cases"]
    count = first_shard["count"]
    absent = [k for k in range(1, count + 1) if k not in seen]
    if absent:
        why = (f"not run: shard(s) {', '.join(f'{k}/{count}' for k in absent)} "
               "not among the merged directories")
        for k in absent:
            for s in first_shard["scenarios"][k - 1::count]:
                for v in first["variants"]:
                    for r in range(1, first["run"].get("repeat", 1) + 1):
                        plan.append({"id": f"{v}::{s['name']}::r{r}", "variant": v,
                                     "repeat": r, "scenario": s, "not_run": why})
    started = datetime.now(UTC)
    meta = {**first["run"], "id": "merge-" + started.strftime("%Y%m%d-%H%M%S"),
            "farm_version": __version__, "shard": None,
            "merged": [f"{s['index']}/{s['count']} {d}" for d, _, s in
                       sorted(shards, key=lambda x: x[2]["index"])],
            "missing_shards": [f"{k}/{count}" for k in absent],
            "seconds": max(r["run"].get("seconds", 0.0) for _, r, _ in shards),
            "interrupted": any(r["run"].get("interrupted") for _, r, _ in shards)}
    write_json(out / "plan.json", {"cases": plan})
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
