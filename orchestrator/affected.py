"""`--affected`: the scenarios whose coverage on the base reaches what a variant's patches
change. The base's coverage per scenario is kept in the cache by every coverage run
(save_base_coverage); a run with --affected makes the missing part first. The patches are applied
to the base's profiled sources (GNU patch, as the build does), and each changed region is
matched with the lines the scenarios reached: the region's executable lines, or for a
region with none (an insertion, a declaration) the nearest executable lines around it in
the same function; a region outside every function (a struct, a macro) counts as the whole
file; a region of comments only selects nothing. Changes outside the profiled files, or no
coverage at all, select everything, and say so."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import whatthepatch

from .build import BuildRequest, BuildResult, build_key, compiler_version
from .caserecords import CaseRecord
from .coverage import Union, patched_files
from .errors import UserError
from .farmfile import FarmConfig
from .files import OwnedDir, locked, write_json
from .options import RunOptions
from .plan import Matrix, base_of, fragments_with, layers_of, select
from .progress import Progress
from .registry import COVERAGE_DEFAULT
from .results import load_cases
from .runner import Runner
from .source import SourceTree, apply_patch, prepare_source, writable_for_builds

COMMENT = re.compile(r"^\s*(/\*.*|\*.*|//.*|\*/\s*)?$")  # blank, or a comment line


# ---- the saved coverage of the base ------------------------------------------------------

def coverage_key(cfg: FarmConfig, base: str, files: tuple[str, ...], src: SourceTree,
                 runner: Runner, layers: tuple[str, ...] = ()) -> str:
    """The key the base's saved coverage goes by: its coverage build's, whatever selftest
    programs that build carried (they do not change the kernel)."""
    return build_key(BuildRequest(cfg.variants[base], src, cfg.base_config,
                                  fragments_with(cfg, layers),
                                  cfg.cache, 1, coverage=files, layers=layers),
                     compiler_version(runner))


def save_base_coverage(cfg: FarmConfig, m: Matrix, src: SourceTree, build: BuildResult,
                       results: Path, runner: Runner) -> None:
    """What the base's scenarios reached, kept in the cache for --affected: from the cases
    and the union the report made of them."""
    cases = [c for c in load_cases(results) if c.variant == m.base]
    union = Union(m.base, build, cases, results)
    try:
        union.shape(json.loads((results / "coverage" / m.base / "gcovr.json").read_text()))
    except (OSError, ValueError):
        return  # no case of the base sent data: nothing to keep
    save(cfg.cache, coverage_key(cfg, m.base, m.coverage, src, runner, m.layers),
         list(m.coverage), cases, union)


def affected(cfg: FarmConfig, opts: RunOptions, progress: Progress, *,
             measure: Callable | None) -> RunOptions:
    """--affected: the options narrowed to the scenarios that reach what the patches change,
    after a coverage run of the base (measure: `farm run`'s run) for the scenarios it has no
    saved coverage of (`farm plan` measures nothing)."""
    runner = Runner()
    variants, scenarios = select(cfg, replace(opts, names=None))
    base = base_of(cfg, variants)
    files = opts.coverage or cfg.coverage or COVERAGE_DEFAULT
    src = prepare_source(cfg.source, cfg.cache, runner, progress)
    key = coverage_key(cfg, base, files, src, runner, layers_of(cfg, opts.layers or ()))
    saved = load(cfg.cache, key)
    known = {**saved.get("scenarios", {}), **saved.get("no_data", {})}
    missing = [s.name for s in scenarios if s.name not in known]
    if missing and measure and any(cfg.variants[v].patches for v in variants if v != base):
        progress.say(f"--affected: no saved coverage of {base} for {len(missing)} scenario(s): "
                     "measuring it first")
        measure(cfg, RunOptions(variants=(base,), names=tuple(missing), tier="full",
                                coverage=files, confirm=0, jobs=opts.jobs, repeat=1,
                                layers=opts.layers), progress)
        saved = load(cfg.cache, key)
    sel = select_affected(cfg, variants, base, [s.name for s in scenarios], files, saved,
                          runner)
    text = explain(sel, len(scenarios)).rstrip("\n")
    progress.say(text)
    return replace(opts, names=tuple(sel.names) if sel.names is not None else None,
                   affected=text)


def saved_path(cache: Path, key: str) -> Path:
    return cache / "coverage" / f"{key}.json"


def save(cache: Path, key: str, files: list[str], cases: list[CaseRecord], union: Union) -> None:
    """Fold a coverage run's base cases into the saved coverage of that kernel: per scenario
    the lines and functions reached (the newest run of a scenario wins), with each file's
    source, executable lines and function of each line, which --affected needs."""
    path = saved_path(cache, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = {}
        if doc.get("files") != files:
            doc = {"files": files, "scenarios": {}, "shape": {}}
        for rel in files:
            if union.executable.get(rel):
                doc["shape"][rel] = {
                    "source": "\n".join(union.source(rel)),
                    "executable": sorted(union.executable[rel]),
                    "function_of": {str(k): v for k, v in union.func_of[rel].items()}}
        doc.setdefault("no_data", {})
        for c in cases:
            cov = c.coverage or {}
            if cov.get("error"):  # remembered, so that it is not measured again each time
                doc["no_data"][c.scenario] = cov["error"]
            if isinstance(cov.get("files"), dict):
                doc["no_data"].pop(c.scenario, None)
                doc["scenarios"][c.scenario] = {
                    rel: {"lines": got.get("lines", []), "functions": got.get("functions", [])}
                    for rel, got in cov["files"].items()}
        write_json(path, doc)


def load(cache: Path, key: str) -> dict:
    try:
        doc = json.loads(saved_path(cache, key).read_text())
        return doc if isinstance(doc.get("scenarios"), dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


# ---- what the patches change -------------------------------------------------------------

def patch_variant(base: dict[str, str], patches: list[Path], runner: Runner,
                  cache: Path) -> dict[str, str]:
    """The profiled files as the variant's series leaves them: each patch's sections for
    those files applied as the build applies patches, to a scratch copy of the base's
    sources."""
    scratch = OwnedDir(cache / "work", "affected")
    try:
        for rel, text in base.items():
            (scratch.path / rel).parent.mkdir(parents=True, exist_ok=True)
            (scratch.path / rel).write_text(text + "\n")
        writable_for_builds(scratch.path, runner)  # GNU patch runs in the sandbox
        for i, p in enumerate(patches, 1):
            sections = [d.text for d in whatthepatch.parse_patch(p.read_text(errors="replace"))
                        if d.header and (d.header.new_path in base or d.header.old_path in base)]
            if not sections:
                continue
            part = scratch.path / f"part-{i}.patch"
            part.write_text("\n".join(sections) + "\n")
            where = apply_patch(scratch.path, part, runner)
            if where:
                raise UserError(f"--affected: patch {i}/{len(patches)} does not apply to the "
                                f"base's profiled files: {p}: {where}")
        return {rel: (scratch.path / rel).read_text().rstrip("\n") for rel in base}
    finally:
        scratch.remove()


@dataclass
class Region:
    """One changed region of a profiled file, in the base's line numbers."""
    file: str
    first: int  # the first base line changed (for an insertion: the line it goes after)
    last: int
    lines: set[int] = field(default_factory=set)  # executable base lines standing for it
    scope: str = "lines"  # lines | file (outside every function) | comment (nothing to run)
    function: str = ""

    def where(self) -> str:
        span = f"{self.first}" if self.first >= self.last else f"{self.first}-{self.last}"
        return f"{self.file}:{span}" + (f" in {self.function}" if self.function else "")


def regions(rel: str, old: str, new: str, shape: dict) -> list[Region]:
    """The changed regions of one file, each with the executable base lines that stand for
    it (see the module's doc)."""
    a, b = old.splitlines(), new.splitlines()
    executable = set(shape["executable"])
    func_of = {int(k): v for k, v in shape["function_of"].items()}
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b,
                                                       autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        r = Region(rel, i1 + 1 if i2 > i1 else i1, max(i2, i1))
        if all(COMMENT.match(t) for t in a[i1:i2] + b[j1:j2]):
            r.scope = "comment"
            out.append(r)
            continue
        r.lines = {ln for ln in range(i1 + 1, i2 + 1) if ln in executable}
        funcs = {func_of[ln] for ln in range(i1 + 1, i2 + 1) if ln in func_of}
        if not r.lines:  # an insertion or a declaration: the executable lines around it
            before = max((ln for ln in executable if ln <= i1), default=None)
            after = min((ln for ln in executable if ln > i2), default=None)
            fn = {func_of.get(before), func_of.get(after)}
            if before and after and len(fn) == 1 and None not in fn:  # inside one function
                r.lines, funcs = {before, after}, fn
        if not r.lines:
            r.scope = "file"
        r.function = ", ".join(sorted(f for f in funcs if f))
        out.append(r)
    return out


# ---- the selection -----------------------------------------------------------------------

@dataclass
class Selection:
    names: list[str] | None  # None: everything
    why: dict[str, list[str]]  # scenario -> the changed regions it reaches
    notes: list[str]


def choose(saved: dict, changes: list[Region], scenarios: list[str]) -> Selection:
    """The scenarios whose saved coverage reaches a changed region."""
    why: dict[str, list[str]] = {}
    notes = [f"{r.where()}: comments only, selects nothing" for r in changes
             if r.scope == "comment"]
    for name in scenarios:
        got = saved["scenarios"].get(name)
        if got is None:
            why[name] = ["no coverage of the base for it ("
                         + saved.get("no_data", {}).get(name, "not measured") + "): selected"]
            continue
        for r in changes:
            reached = got.get(r.file, {}).get("lines", [])
            if r.scope == "file" and reached:
                why.setdefault(name, []).append(f"{r.where()} is outside every function and "
                                                "the scenario reaches the file")
            elif r.scope == "lines":
                hit = sorted(r.lines & set(reached))
                if hit:
                    why.setdefault(name, []).append(
                        f"reaches {r.where()} (line{'s' if len(hit) > 1 else ''} "
                        f"{', '.join(map(str, hit))})")
    return Selection([n for n in scenarios if n in why], why, notes)


def select_affected(cfg: FarmConfig, variants: list[str], base: str, scenarios: list[str],
                    files: tuple[str, ...], saved: dict, runner: Runner) -> Selection:
    """The scenarios that matter for the non-base variants' patches, given the base's
    saved coverage (empty: none saved)."""
    files = files or COVERAGE_DEFAULT
    others = [v for v in variants if v != base]
    patches = [p for v in others for p in cfg.variants[v].patches]
    if not others or not patches:
        return Selection(None, {}, ["no variant beside the base has patches: every scenario"])
    outside = [f for f in patched_files([str(p) for p in patches]) if f not in files]
    if outside:
        return Selection(None, {}, [f"the patches change files that are not profiled "
                                    f"({', '.join(outside)}): every scenario"])
    if not saved.get("scenarios") or not all(f in saved.get("shape", {}) for f in files):
        return Selection(None, {}, ["no coverage of the base is saved: every scenario"])
    base_src = {rel: saved["shape"][rel]["source"] for rel in files}
    changes: list[Region] = []
    for v in others:
        new = patch_variant(base_src, list(cfg.variants[v].patches), runner, cfg.cache)
        for rel in files:
            changes += regions(rel, base_src[rel], new[rel], saved["shape"][rel])
    sel = choose(saved, changes, scenarios)
    if not changes:
        sel.notes.append("the patches change none of the profiled lines")
    return sel


def explain(sel: Selection, total: int) -> str:
    lines = [*sel.notes]
    if sel.names is not None:
        lines.append(f"--affected: {len(sel.names)} of {total} scenarios reach what the patches "
                     "change:")
        lines += [f"  {n}: {'; '.join(sel.why[n])}" for n in sel.names]
    return "\n".join(lines) + "\n"
