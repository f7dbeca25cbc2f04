"""KCIDB output: a run as the JSON a kernel CI lab submits to KernelCI's database (KCIDB,
schema v5 of the kcidb-io package, which also validates it). Pure: the results document in,
a KCIDB document out; `farm kcidb DIR` and every run's reports write it as kcidb.json.
Submitting it is the lab's business (docs/results.md: KCIDB); nothing here sends anything.

The model: a checkout per variant (the kernel source, and that variant's patchset, which is a
checkout's property in KCIDB: the base's checkout has none), its build, and a test per case,
`hwpoison.<scenario>`, with a kselftest's KTAP tests under it (`hwpoison.<scenario>.<n>.<m>`).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from .build import BuildResult
from .caserecords import CaseRecord
from .results import Results, RunInfo, VariantInfo

DEFAULT_ORIGIN = "hwpoison_farm"
STATUS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIP"}
PATH_PART = re.compile(r"[^A-Za-z0-9_-]")
CC_VERSION = re.compile(r'^CONFIG_CC_VERSION_TEXT="(.*)"$', re.M)


def patchset_hash(shas: list[str]) -> str:
    """KCIDB's patchset hash: sha256 over the patches' sha256 hashes, each newline-terminated,
    in order (`sha256sum *.patch | cut -c-64 | sha256sum`); empty without patches."""
    if not shas:
        return ""
    return hashlib.sha256("".join(f"{h}\n" for h in shas).encode()).hexdigest()


def _iso(ts) -> str | None:
    if not isinstance(ts, int | float):
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _path(*parts: str) -> str:
    """A KCIDB test path: dot-separated words of letters, digits, _ and - (a scenario name's
    dots become _)."""
    return ".".join(PATH_PART.sub("_", p) for p in parts if p)


class _Urls:
    """Where a file of the run is: under the lab's URL when the run says where it publishes
    its result directory, else a file: URL on this machine."""

    def __init__(self, results: Path, base: str):
        self.results, self.base = results, base.rstrip("/")

    def __call__(self, path: str | Path | None) -> str | None:
        if not path:
            return None
        p = Path(path)
        if not p.is_absolute():
            if self.base:
                return f"{self.base}/{quote(p.as_posix())}"
            p = self.results / p
        elif self.base and p.is_relative_to(self.results):
            return f"{self.base}/{quote(p.relative_to(self.results).as_posix())}"
        return p.absolute().as_uri()

    def files(self, paths) -> list[dict]:
        return [{"name": Path(p).name, "url": self(p)} for p in paths if p]


def _compiler(build: BuildResult) -> str | None:
    try:
        m = CC_VERSION.search(Path(build.config or "").read_text(errors="replace"))
    except OSError:
        return None
    return m.group(1) if m else None


def _patch_shas(variant: VariantInfo) -> list[str] | None:
    """Each patch's sha256, from the build's record or the file; None when one is unknown."""
    recorded = [p.get("sha256") for p in (variant.build.patches if variant.build else [])]
    if recorded and all(recorded):
        return recorded
    out = []
    for p in variant.patches or []:
        try:
            out.append(hashlib.sha256(Path(p).read_bytes()).hexdigest())
        except OSError:
            return None
    return out


def _not_applied(build: BuildResult | None) -> bool:
    """A variant whose patches did not apply: nothing was built from its checkout."""
    return build is not None and build.status == "failed" and "apply" in (build.error or "")


def _checkout(origin: str, run: RunInfo, name: str, variant: VariantInfo, urls: _Urls) -> dict:
    build = variant.build
    patches = [p.get("path") for p in (build.patches if build else [])] or variant.patches or []
    source = variant.source or run.source  # a variant of a run of several sources has its own
    out = {"id": f"{origin}:{run.id}:{name}", "origin": origin,
           "comment": f"{source.describe if source else 'kernel source'}"
                      + (f" with the {len(patches)} patch(es) of variant {name}" if patches
                         else f" (variant {name}, no patches)"),
           "start_time": _iso(run.started),
           "patchset_files": urls.files(patches),
           "misc": {"variant": name, "description": variant.description or "",
                    "source": source.describe if source else None,
                    "source_digest": source.digest if source else None,
                    **({"kernel_version": variant.kernel} if variant.kernel else {})}}
    shas = _patch_shas(variant)
    if shas is not None:
        out["patchset_hash"] = patchset_hash(shas)
    if _not_applied(build):
        out["valid"] = False  # the source and the patches could not be combined
        out["log_excerpt"] = build.error[:16000]
    elif build is not None and build.status in ("built", "cached", "failed"):
        out["valid"] = True
    return {k: v for k, v in out.items() if v is not None}


def _build(origin: str, run: RunInfo, name: str, variant: VariantInfo, results: Path,
           urls: _Urls) -> dict:
    build = variant.build
    get = (lambda f: getattr(build, f)) if build else (lambda f: None)
    layers = get("layers") or run.layers or []
    log, config = Path("builds") / f"{name}.log", Path("builds") / f"{name}.config"
    status = {"built": "PASS", "cached": "PASS", "failed": "FAIL"}.get(get("status"))
    if _not_applied(build):
        status = "ERROR"  # nothing was built: the checkout is not valid
    seconds = get("seconds")
    out = {"id": f"{origin}:{run.id}:{name}:build", "origin": origin,
           "checkout_id": f"{origin}:{run.id}:{name}",
           "start_time": _iso(run.started),
           "duration": seconds if isinstance(seconds, int | float) else None,
           "architecture": "x86_64", "compiler": _compiler(build) if build else None,
           "config_name": "+".join(["farm", *layers]),
           "config_url": urls(config if (results / config).is_file() else get("config")),
           "log_url": urls(log if (results / log).is_file() else get("log")),
           "log_excerpt": "\n".join(get("error_lines") or [])[:16000] or None,
           "status": status or "MISS",
           "misc": {"variant": name, "build_key": get("key"), "release": get("release"),
                    "layers": layers, "boot": get("boot_via"), "error": get("error") or None}}
    out["misc"] = {k: v for k, v in out["misc"].items() if v is not None}
    return {k: v for k, v in out.items() if v is not None}


def _status(case: CaseRecord) -> str:
    if case.status == "error" and not case.observed:
        return "MISS"  # never ran: a run stopped, a shard or host that never came back
    return STATUS.get(case.status, "ERROR")


def _test(origin: str, run: RunInfo, c: CaseRecord, verdict: str | None, env: dict,
          urls: _Urls) -> dict:
    scenario, _, ktap = c.scenario.partition("/")
    logs = c.log_paths
    misc = {"variant": c.variant, "scenario": c.scenario, "repeat": c.repeat,
            "message": c.message, "page_kind": c.page_kind, "injector": c.injector,
            "access": c.access, "expected": c.expected, "observed": c.observed,
            "confirm": c.confirm, "verdict": verdict, "race": c.race}
    test = {"id": f"{origin}:{run.id}:{c.id}", "origin": origin,
            "build_id": f"{origin}:{run.id}:{c.variant}:build",
            "path": _path("hwpoison", scenario, *ktap.split(".")),
            "status": _status(c), "comment": c.message[:1000],
            "start_time": _iso(c.started),
            "duration": c.seconds if isinstance(c.seconds, int | float) else None,
            "environment": env, "log_url": urls(logs.get("console")),
            "output_files": urls.files(logs.get(k) for k in ("agent", "qemu")),
            "misc": {k: v for k, v in misc.items() if v is not None}}
    return {k: v for k, v in test.items() if v not in (None, [])}


def _tests(origin: str, doc: Results, urls: _Urls) -> list[dict]:
    run = doc.run
    verdicts = {(c.variant, c.scenario): c.verdict for c in doc.comparison}
    env = {"comment": f"QEMU, {run.accel_reason or run.accelerator or '?'}"}
    return [_test(origin, run, c, verdicts.get((c.variant, c.scenario)), env, urls)
            for case in doc.cases for c in (case, *(case.subcases or ()))]


def kcidb_doc(doc: Results, results: Path, origin: str = "", url: str = "") -> dict:
    """The KCIDB document of a run's results (doc) in its directory (results): origin and
    url default to what the run recorded (farm.yaml's `kcidb:`), then to the defaults."""
    from kcidb_io.schema import LATEST

    run = doc.run
    settings = run.kcidb or {}
    origin = origin or settings.get("origin") or DEFAULT_ORIGIN
    urls = _Urls(results.absolute(), url or settings.get("url") or "")
    return {"version": {"major": LATEST.major, "minor": LATEST.minor},
            "checkouts": [_checkout(origin, run, n, v, urls) for n, v in doc.variants.items()],
            "builds": [_build(origin, run, n, v, results, urls)
                       for n, v in doc.variants.items()],
            "tests": _tests(origin, doc, urls)}


def validate(kdoc: dict) -> None:
    """kcidb-io's own validation of the document (jsonschema.ValidationError if it fails)."""
    from kcidb_io.schema import LATEST
    LATEST.validate(kdoc)
