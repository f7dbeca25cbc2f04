"""KCIDB output: a run as the JSON a kernel CI lab submits to KernelCI's database (KCIDB,
schema v5 of the kcidb-io package, which also validates it). Pure: a results.json document in,
a KCIDB document out; `farm kcidb DIR` and every run's reports write it as kcidb.json.
Submitting it is the lab's business (README: KCIDB); nothing here sends anything.

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

DEFAULT_ORIGIN = "hwpoison_farm"
ORIGIN_RE = re.compile(r"^[a-z0-9_]{1,64}$")  # KCIDB's origin pattern, bounded
URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d+)?(/[A-Za-z0-9._~%/+-]*)?$")
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


def _compiler(build: dict) -> str | None:
    try:
        m = CC_VERSION.search(Path(build.get("config") or "").read_text(errors="replace"))
    except OSError:
        return None
    return m.group(1) if m else None


def _patch_shas(variant: dict, build: dict) -> list[str] | None:
    """Each patch's sha256, from the build's record or the file; None when one is unknown."""
    recorded = [p.get("sha256") for p in build.get("patches") or []]
    if recorded and all(recorded):
        return recorded
    out = []
    for p in variant.get("patches") or []:
        try:
            out.append(hashlib.sha256(Path(p).read_bytes()).hexdigest())
        except OSError:
            return None
    return out


def _not_applied(build: dict) -> bool:
    """A variant whose patches did not apply: nothing was built from its checkout."""
    return build.get("status") == "failed" and "apply" in (build.get("error") or "")


def _checkout(origin: str, run: dict, name: str, variant: dict, urls: _Urls) -> dict:
    build = variant.get("build") or {}
    source = run.get("source") or {}
    patches = [p.get("path") for p in build.get("patches") or []] or variant.get("patches") or []
    out = {"id": f"{origin}:{run['id']}:{name}", "origin": origin,
           "comment": f"{source.get('describe', 'kernel source')}"
                      + (f" with the {len(patches)} patch(es) of variant {name}" if patches
                         else f" (variant {name}, no patches)"),
           "start_time": _iso(run.get("started")),
           "patchset_files": urls.files(patches),
           "misc": {"variant": name, "description": variant.get("description") or "",
                    "source": source.get("describe"), "source_digest": source.get("digest")}}
    shas = _patch_shas(variant, build)
    if shas is not None:
        out["patchset_hash"] = patchset_hash(shas)
    if _not_applied(build):
        out["valid"] = False  # the source and the patches could not be combined
        out["log_excerpt"] = build["error"][:16000]
    elif build.get("status") in ("built", "cached", "failed"):
        out["valid"] = True
    return {k: v for k, v in out.items() if v is not None}


def _build(origin: str, run: dict, name: str, variant: dict, results: Path,
           urls: _Urls) -> dict:
    build = variant.get("build") or {}
    layers = build.get("layers") or run.get("layers") or []
    log, config = Path("builds") / f"{name}.log", Path("builds") / f"{name}.config"
    status = {"built": "PASS", "cached": "PASS", "failed": "FAIL"}.get(build.get("status"))
    if _not_applied(build):
        status = "ERROR"  # nothing was built: the checkout is not valid
    out = {"id": f"{origin}:{run['id']}:{name}:build", "origin": origin,
           "checkout_id": f"{origin}:{run['id']}:{name}",
           "start_time": _iso(run.get("started")),
           "duration": build.get("seconds") if isinstance(build.get("seconds"), int | float)
           else None,
           "architecture": "x86_64", "compiler": _compiler(build),
           "config_name": "+".join(["farm", *layers]),
           "config_url": urls(config if (results / config).is_file() else build.get("config")),
           "log_url": urls(log if (results / log).is_file() else build.get("log")),
           "log_excerpt": "\n".join(build.get("error_lines") or [])[:16000] or None,
           "status": status or "MISS",
           "misc": {"variant": name, "build_key": build.get("key"),
                    "release": build.get("release"), "layers": layers,
                    "boot": build.get("boot_via"), "error": build.get("error") or None}}
    out["misc"] = {k: v for k, v in out["misc"].items() if v is not None}
    return {k: v for k, v in out.items() if v is not None}


def _status(case: dict) -> str:
    if case["status"] == "error" and not case.get("observed"):
        return "MISS"  # never ran: a run stopped, a shard or host that never came back
    return STATUS.get(case["status"], "ERROR")


def _tests(origin: str, run: dict, doc: dict, urls: _Urls) -> list[dict]:
    verdicts = {(c["variant"], c["scenario"]): c["verdict"] for c in doc.get("comparison", [])}
    env = {"comment": f"QEMU, {run.get('accel_reason') or run.get('accelerator') or '?'}"}
    out = []
    for case in doc["cases"]:
        for c in (case, *(case.get("subcases") or [])):
            scenario, _, ktap = c["scenario"].partition("/")
            logs = c.get("logs") or {}
            misc = {"variant": c["variant"], "scenario": c["scenario"],
                    "repeat": c["repeat"], "message": c.get("message", ""),
                    "page_kind": c.get("page_kind"), "injector": c.get("injector"),
                    "access": c.get("access"), "expected": c.get("expected"),
                    "observed": c.get("observed"), "confirm": c.get("confirm", False),
                    "verdict": verdicts.get((c["variant"], c["scenario"])),
                    "race": c.get("race")}
            test = {"id": f"{origin}:{run['id']}:{c['id']}", "origin": origin,
                    "build_id": f"{origin}:{run['id']}:{c['variant']}:build",
                    "path": _path("hwpoison", scenario, *ktap.split(".")),
                    "status": _status(c), "comment": c.get("message", "")[:1000],
                    "start_time": _iso(c.get("started")),
                    "duration": c.get("seconds") if isinstance(c.get("seconds"), int | float)
                    else None,
                    "environment": env, "log_url": urls(logs.get("console")),
                    "output_files": urls.files(logs.get(k) for k in ("agent", "qemu")),
                    "misc": {k: v for k, v in misc.items() if v is not None}}
            out.append({k: v for k, v in test.items() if v not in (None, [])})
    return out


def kcidb_doc(doc: dict, results: Path, origin: str = "", url: str = "") -> dict:
    """The KCIDB document of a run's results.json (doc) in its directory (results): origin
    and url default to what the run recorded (farm.yaml's `kcidb:`), then to the defaults."""
    from kcidb_io.schema import LATEST

    run = doc["run"]
    settings = run.get("kcidb") or {}
    origin = origin or settings.get("origin") or DEFAULT_ORIGIN
    urls = _Urls(results.absolute(), url or settings.get("url") or "")
    variants = doc["variants"]
    return {"version": {"major": LATEST.major, "minor": LATEST.minor},
            "checkouts": [_checkout(origin, run, n, v, urls) for n, v in variants.items()],
            "builds": [_build(origin, run, n, v, results, urls) for n, v in variants.items()],
            "tests": _tests(origin, run, doc, urls)}


def validate(kdoc: dict) -> None:
    """kcidb-io's own validation of the document (jsonschema.ValidationError if it fails)."""
    from kcidb_io.schema import LATEST
    LATEST.validate(kdoc)
