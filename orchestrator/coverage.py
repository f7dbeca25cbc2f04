"""Coverage of the profiled kernel files, per case, per variant and between variants.

A coverage build compiles the profiled files with gcov and publishes their patched source
and .gcno beside the kernel (build.publish_coverage). The agent zeroes the counters before
the workload and sends each .gcda back over the agent channel after it. Here the host
writes them into the case directory, has gcovr read them with the build's own notes, and
keeps per case the lines and functions that ran. Per variant: the union of its cases (the
Cobertura XML of them, by gcovr again). Between two variants: what each reached that the
other did not (lines matched through a diff of the two sources), and the variant's changed
lines. coverage_report.py makes the run's report of them.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import logging
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import whatthepatch

from .errors import FarmError, InfraError
from .runner import Runner, quote
from .runner import log as cmd_log

if TYPE_CHECKING:
    from .build import BuildResult
    from .caserecords import CaseRecord, CaseSpec

GCDA_DIR = "gcov"  # a case's .gcda files, under their tree paths, in its directory


# ---- per case -------------------------------------------------------------------------

def save_gcda(events: list[dict], files: list[str], dest: Path) -> tuple[list[str], str]:
    """The agent's gcov events as .gcda files under dest (same relative paths as in the
    tree): (the files written, a problem or ''). Only the profiled files are taken; a
    torn or foreign event is a problem, never a traceback."""
    written, problems = [], []
    for ev in events:
        if ev.get("event") != "gcov":
            continue
        rel, data = ev.get("file"), ev.get("base64")
        if rel not in files or not isinstance(data, str):
            problems.append(f"an unexpected gcov event for {str(rel)[:80]!r}")
            continue
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{rel}: the guest's gcov data is not base64 (torn line?)")
            continue
        out = (dest / rel).with_suffix(".gcda")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(raw)
        written.append(rel)
    missing = [f for f in files if f not in written]
    if missing and not problems:
        problems.append("the guest sent no gcov data for " + ", ".join(missing))
    return written, "; ".join(problems)


def _gcovr_here(args: list) -> None:
    """gcovr in this process: per case its interpreter's start-up was half of what coverage
    cost. Logged as the command line that does the same; gcovr runs gcov itself. Its
    logging set-up is undone, so that the farm's log lines stay where they were."""
    from gcovr.__main__ import main
    cmd_log.info("$ %s", quote(["gcovr", *map(str, args)]))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    finally:
        root.handlers[:], root.level = handlers, level
    if rc:
        raise InfraError(f"gcovr exited with {rc}: {quote(['gcovr', *map(str, args)])}")


def gcovr_over(build_dir: Path, files: list[str], gcda_dir: Path, outputs: list) -> None:
    """gcovr over the .gcda of gcda_dir read beside the build's own .gcno and source. gcov
    runs in a scratch copy (it writes a file per header where it runs), removed afterwards;
    only the profiled files are kept, not the headers they include (their sources are not
    kept with the build). outputs: gcovr's output options (--json FILE, --cobertura FILE)."""
    scratch = gcda_dir.with_name(gcda_dir.name + ".scratch")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        for rel in files:
            for suffix, where in ((".gcno", build_dir), (".c", build_dir), (".gcda", gcda_dir)):
                src = (where / rel).with_suffix(suffix)
                if src.is_file():
                    (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, (scratch / rel).with_suffix(suffix))
        filters = [x for rel in files for x in ("--filter", re.escape(str(scratch / rel)) + "$")]
        _gcovr_here(["--root", scratch, *filters, "--include-internal-functions",
                     "--gcov-ignore-errors", "source_not_found", *outputs, scratch])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_case(build_dir: Path, files: list[str], gcda_dir: Path) -> dict:
    """gcovr's JSON of one case's .gcda (kept only while it is read: the .gcda stay)."""
    out = gcda_dir.with_name(gcda_dir.name + ".json")
    try:
        gcovr_over(build_dir, files, gcda_dir, ["--json", out])
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def reached(gcovr_doc: dict) -> dict[str, dict]:
    """Per file of a gcovr JSON: the lines and functions that ran, and how many there are."""
    out = {}
    for f in gcovr_doc.get("files", []):
        lines = sorted({ln["line_number"] for ln in f["lines"] if ln.get("count")})
        funcs = sorted({fn["name"] for fn in f.get("functions", []) if fn.get("execution_count")})
        out[f["file"]] = {"lines": lines, "functions": funcs,
                          "lines_total": len({ln["line_number"] for ln in f["lines"]}),
                          "functions_total": len({fn["name"] for fn in f.get("functions", [])})}
    return out


def for_case(spec: CaseSpec, events: list[dict], case_dir: Path) -> dict:
    """A case's coverage record: per profiled file the lines and functions its workload
    reached, or why there is none (the guest panicked, hung, or sent nothing)."""
    files = list(spec.coverage_files)
    _, problem = save_gcda(events, files, case_dir / GCDA_DIR)
    if problem:
        return {"error": problem}
    try:
        doc = read_case(Path(spec.coverage_dir), files, case_dir / GCDA_DIR)
    except (FarmError, OSError, ValueError) as e:
        return {"error": f"gcovr could not read the guest's data: {str(e).splitlines()[0]}"}
    return {"files": reached(doc), "gcda": GCDA_DIR}


# ---- per variant ----------------------------------------------------------------------

def _rel_case_dir(case: CaseRecord) -> str | None:
    console = case.log_paths.get("console")
    return str(Path(console).parent) if console else None


class Union:
    """A variant's coverage over its cases: per file, line -> the scenarios that reached
    it, function -> the scenarios; the executable lines and each line's function come from
    gcovr's JSON of one of its cases."""

    def __init__(self, variant: str, build: BuildResult | None, cases: list[CaseRecord],
                 results: Path):
        self.variant, self.results = variant, results
        self.dir = Path((build.coverage if build else None) or "")
        self.files: list[str] = list((build.coverage_files if build else None) or [])
        self.lines: dict[str, dict[int, set[str]]] = {f: {} for f in self.files}
        self.funcs: dict[str, dict[str, set[str]]] = {f: {} for f in self.files}
        self.executable: dict[str, set[int]] = {f: set() for f in self.files}
        self.func_of: dict[str, dict[int, str]] = {f: {} for f in self.files}
        self.all_funcs: dict[str, set[str]] = {f: set() for f in self.files}
        self.with_data: list[CaseRecord] = []
        self.without: list[str] = []
        for c in cases:
            cov = c.coverage
            if not isinstance(cov, dict):
                continue
            if cov.get("error") or not isinstance(cov.get("files"), dict):
                self.without.append(f"{c.scenario} r{c.repeat}: {cov.get('error')}")
                continue
            self.with_data.append(c)
            for rel, got in cov["files"].items():
                if rel not in self.lines:
                    continue
                for ln in got.get("lines", []):
                    self.lines[rel].setdefault(ln, set()).add(c.scenario)
                for fn in got.get("functions", []):
                    self.funcs[rel].setdefault(fn, set()).add(c.scenario)

    def shape(self, doc: dict) -> None:
        """The executable lines, each line's function and every function of each file, from
        gcovr's JSON of this variant's build."""
        for f in doc.get("files", []):
            rel = f.get("file")
            if rel in self.executable:
                for ln in f["lines"]:
                    self.executable[rel].add(ln["line_number"])
                    if ln.get("function_name"):
                        self.func_of[rel][ln["line_number"]] = ln["function_name"]
                self.all_funcs[rel] = {fn["name"] for fn in f.get("functions", [])}

    def source(self, rel: str) -> list[str]:
        try:
            return (self.dir / rel).read_text(errors="replace").splitlines()
        except OSError:
            return []

    def totals(self, rel: str) -> dict:
        lt, lr = len(self.executable[rel]), len(self.lines[rel])
        ft, fr = len(self.all_funcs[rel]), len(self.funcs[rel])
        return {"lines_total": lt, "lines_reached": lr, "functions_total": ft,
                "functions_reached": fr,
                "percent": round(100 * lr / lt, 1) if lt else 0.0}


def merge(u: Union, dest: Path, runner: Runner) -> bool:
    """Every case's .gcda of the variant summed into dest with gcov-tool (GCC's own profile
    merger): what all its cases reached together, with hit counts."""
    dirs = [u.results / _rel_case_dir(c) / c.coverage.get("gcda", GCDA_DIR)
            for c in u.with_data]
    dirs = [d for d in dirs if d.is_dir()]
    shutil.rmtree(dest, ignore_errors=True)
    if not dirs:
        return False
    shutil.copytree(dirs[0], dest)
    for d in dirs[1:]:
        runner.run(["gcov-tool", "merge", "-o", dest, dest, d])
    return True


def union_outputs(u: Union, where: Path, runner: Runner) -> dict:
    """The variant's merged data read once by gcovr: Cobertura XML (for GitLab's
    coverage_report or Jenkins; its <source> is the build's copy of the profiled sources)
    and the JSON that gives each file's shape."""
    merged = where / "gcda"
    if not merge(u, merged, runner):
        return {}
    xml, js = where / "coverage.xml", where / "gcovr.json"
    gcovr_over(u.dir, u.files, merged, ["--json", js, "--cobertura", xml,
                                        "--cobertura-pretty"])
    tree = ET.parse(xml)
    for src in tree.getroot().iter("source"):
        src.text = str(u.dir)
    tree.write(xml, xml_declaration=True, encoding="utf-8")
    u.shape(json.loads(js.read_text()))
    return {"cobertura": xml}


# ---- between variants -------------------------------------------------------------------

def line_map(old: list[str], new: list[str]) -> tuple[dict[int, int], set[int], set[int]]:
    """Lines of two versions of a file matched by a diff: (new line -> old line for the
    lines both have, the new file's changed or added lines, the old file's changed or
    removed lines), all numbered from 1."""
    sm = difflib.SequenceMatcher(None, old, new, autojunk=False)
    same: dict[int, int] = {}
    changed, removed = set(), set()
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            same.update({j1 + k + 1: i1 + k + 1 for k in range(i2 - i1)})
        else:
            changed.update(range(j1 + 1, j2 + 1))
            removed.update(range(i1 + 1, i2 + 1))
    return same, changed, removed


def _lines_text(src: list[str], lines: list[int], limit: int = 200) -> list[dict]:
    return [{"line": ln, "text": src[ln - 1].strip()[:limit] if 0 < ln <= len(src) else ""}
            for ln in lines]


def ab(base: Union, var: Union) -> tuple[dict, dict[str, set[int]]]:
    """Per file both profiled: what the variant's scenarios reached that the base's did not
    and the other way round (lines matched through a diff of the two sources, functions by
    name), and the variant's changed executable lines, reached or not; and per file the
    variant's changed lines (for its annotated view)."""
    out, changes = {}, {}
    for rel in var.files:
        if rel not in base.files:
            continue
        bsrc, vsrc = base.source(rel), var.source(rel)
        same, changed, _removed = line_map(bsrc, vsrc)
        changes[rel] = changed
        back = {b: v for v, b in same.items()}
        rb, rv = set(base.lines[rel]), set(var.lines[rel])
        only_var = sorted(v for v in rv if v in same and same[v] not in rb)
        only_base = sorted(b for b in rb if b in back and back[b] not in rv)
        exec_changed = sorted(changed & var.executable[rel])
        fb, fv = set(base.funcs[rel]), set(var.funcs[rel])
        out[rel] = {
            "reached_only_here": {"lines": _lines_text(vsrc, only_var),
                                  "functions": sorted(fv - fb)},
            "reached_only_in_base": {"lines": _lines_text(bsrc, only_base),
                                     "functions": sorted(fb - fv)},
            "changed_lines": len(changed),
            "changed_reached": [{**x, "scenarios": sorted(var.lines[rel][x["line"]])}
                                for x in _lines_text(vsrc, [ln for ln in exec_changed
                                                            if ln in rv])],
            "changed_unreached": _lines_text(vsrc, [ln for ln in exec_changed if ln not in rv]),
        }
    return out, changes


def patched_files(patches: list[str]) -> list[str]:
    """The files a patch series changes, in the tree's terms (a/ b/ stripped)."""
    out: list[str] = []
    for p in patches:
        try:
            text = Path(p).read_text(errors="replace")
        except OSError:
            continue
        for d in whatthepatch.parse_patch(text):
            for path in (d.header.new_path, d.header.old_path) if d.header else ():
                if path and path != "/dev/null" and path not in out:
                    out.append(path)
                    break
    return out
