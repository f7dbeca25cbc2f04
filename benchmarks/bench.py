"""Benchmarks of the farm, each a ratio measured side by side in one run on this machine.
Never a timed test: these machines are shared and noisy, so read the ratios, not the seconds.

    .venv/bin/python benchmarks/bench.py [--only NAME,...] [--cold] [--out FILE]

  build      farm build of a variant vs plain `make` of the same config, both with warm ccache
             (--cold: also both from an empty ccache, ~11 minutes on two cores)
  unchanged  the time for the farm to find an unchanged variant's kernel in its cache
  case       one farm case restored from a snapshot and one booted cold vs a bare
             qemu-system-x86_64 boot of the same kernel and initramfs running the same
             workload, and a bare boot of the bzImage through the default firmware for
             reference (median of 7 each, interleaved)
  snapshot   runs by snapshot vs cold (docs/snapshots.md): the warm default A/B, the race set
             on the debug layer, -j 2 vs -j 1 with snapshots, and a one-case `farm run` (the
             whole process) vs a bare QEMU run of that case's command line
  parallel   the same 32-case matrix with -j 2 vs -j 1
  ab         the whole default A/B run (farm.yaml) from a warm cache, with and without the
             confirmation of its verdicts
  coverage   a case of a coverage build (gcov in the guest, its data sent back and read by
             gcovr) vs the same case of the plain build (median of 7 each, interleaved), and
             the base's whole default run with --coverage vs without (warm builds both)
  layers     a case on the debug layer's kernel and on the KASAN layer's vs the same case on
             the plain kernel (median of 5 each, interleaved), and what each build cost
  sandbox    what the sandbox costs (docs/sandbox.md): the base's warm build and one case, each
             in the sandbox vs outside it (--no-sandbox's way), interleaved; and the patched
             variant's warm build, which reads ccache only, vs the base's beside it
  bisect     `farm bisect` of a 16-patch series whose patch 11 is the demonstration patch (the
             others add a comment each): prefixes built, the first bad patch found, and each
             prefix's warm build against the warm build of the base beside it
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.build import BuildRequest, build, plan_build  # noqa: E402
from orchestrator.case import kernel_cmdline, run_case  # noqa: E402
from orchestrator.caserecords import CaseSpec  # noqa: E402
from orchestrator.farmfile import load_farm  # noqa: E402
from orchestrator.image import build_image  # noqa: E402
from orchestrator.options import RunOptions  # noqa: E402
from orchestrator.progress import Progress  # noqa: E402
from orchestrator.qemu import GuestRequest, Machine, qemu_command  # noqa: E402
from orchestrator.registry import COVERAGE_DEFAULT  # noqa: E402
from orchestrator.results import read_results  # noqa: E402
from orchestrator.run import run  # noqa: E402
from orchestrator.runner import Runner  # noqa: E402
from orchestrator.source import prepare_source  # noqa: E402

CFG = load_farm(REPO / "farm.yaml")
RUNNER = Runner()
QUIET = Progress(stream=open(os.devnull, "w"))


SMOKE = False  # --smoke: one round of everything, to show the code runs (tests/test_bench.py)


def rounds(n: int) -> int:
    """How many rounds a figure takes: n, or one in a smoke run (whose figures mean nothing)."""
    return 1 if SMOKE else n


def timed(fn, *args, **kwargs) -> float:
    start = time.monotonic()
    fn(*args, **kwargs)
    return time.monotonic() - start


def source():
    return prepare_source(CFG.source, CFG.cache, RUNNER, QUIET)


def one_case(s, i: int, tmp: Path, where: str, build_, image, machine, timeout: int = 60,
             runner: Runner = RUNNER, boot: str = "cold"):
    """One farm case of scenario s on a build, run as a pytest worker runs it; it must pass.
    boot: cold, or snapshot (restored from a snapshot kept under tmp, made by the first)."""
    (tmp / "run").mkdir(exist_ok=True)
    spec = CaseSpec.planned("b", s, i, results=str(tmp), machine=machine, kernel=build_.boot,
                            initrd=str(image.initrd), disk=str(image.disk),
                            swap=str(image.swap), timeout=timeout,
                            coverage_dir=build_.coverage or None,
                            coverage_files=tuple(build_.coverage_files), boot=boot,
                            sockets=str(tmp / "run"))
    rec = run_case(replace(spec, dir=f"{where}/{i}"), runner)
    assert rec.status == "pass", (where, rec.message)
    assert rec.boot == boot, (where, rec.boot_why)
    return rec


def plain_make(src: Path, obj: Path, ccache_dir: Path, use_ccache: bool) -> float:
    """The same config built the way a developer would by hand: make in a fresh O= directory.
    With ccache it gets the farm's own ccache settings, so both see the same warm cache."""
    shutil.rmtree(obj, ignore_errors=True)
    cc = "ccache gcc" if use_ccache else "gcc"
    env = {"CCACHE_DIR": str(ccache_dir), "CCACHE_BASEDIR": str(obj.parent),
           "CCACHE_NOHASHDIR": "1"}
    make = ["make", "-C", src, f"O={obj}", f"CC={cc}", f"HOSTCC={cc}"]
    start = time.monotonic()
    RUNNER.run([*make, CFG.base_config], env=env)
    RUNNER.run([src / "scripts/kconfig/merge_config.sh", "-m", "-O", obj, obj / ".config",
                *CFG.fragments], env=env)
    RUNNER.run([*make, "olddefconfig"], env=env)
    RUNNER.run([*make, f"-j{(os.cpu_count() or 1) + 1}", "bzImage"], env=env)
    return time.monotonic() - start


def farm_build(cache: Path, runner: Runner = RUNNER, variant: str = "") -> float:
    """The farm's build of a variant (default: the base; its tree, config and make) into a
    cache; returns its time."""
    src = source()
    req = BuildRequest(CFG.variants[variant or CFG.base], src, CFG.base_config, CFG.fragments,
                       cache, (os.cpu_count() or 1) + 1)
    return timed(build, req, runner, QUIET)


def scratch_cache() -> Path:
    """A cache of its own (so the farm really builds) with the warm ccache and sources."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-farm-"))
    (scratch / "ccache").symlink_to(CFG.cache / "ccache")
    (scratch / "sources").symlink_to(CFG.cache / "sources")
    return scratch


def bench_sandbox() -> dict:
    """Builds and cases in the sandbox against the same outside it, interleaved (the first
    round in the other order); each figure the fastest build of three, the median case of 7."""
    outside = Runner(sandbox=False)
    patched = next(v for v in CFG.variants if v != CFG.base)
    builds: dict[str, list[float]] = {"in": [], "out": [], "patched": []}
    for rnd in range(rounds(3)):
        order = (("out", outside), ("in", RUNNER)) if rnd == 0 else (
            ("in", RUNNER), ("out", outside))
        for name, runner in order:
            scratch = scratch_cache()
            builds[name].append(farm_build(scratch, runner))
            shutil.rmtree(scratch)
        scratch = scratch_cache()
        builds["patched"].append(farm_build(scratch, RUNNER, patched))
        shutil.rmtree(scratch)
    s = next(s for s in CFG.scenarios if s.name == "anon-madvise")
    built = build(BuildRequest(CFG.variants[CFG.base], source(), CFG.base_config,
                               CFG.fragments, CFG.cache, 3), RUNNER, QUIET)
    image = build_image(CFG.guest_tests, CFG.cache, RUNNER)
    machine = Machine(cpu=CFG.guest.cpu, memory_mb=CFG.guest.memory_mb, accel="tcg")
    tmp = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    cases: dict[str, list[float]] = {"in": [], "out": []}
    for i in range(rounds(7)):
        for name, runner in (("in", RUNNER), ("out", outside)):
            cases[name].append(timed(one_case, s, i, tmp, name, built, image, machine,
                                     runner=runner))
    shutil.rmtree(tmp)
    b_in, b_out, b_patched = (min(builds[k]) for k in ("in", "out", "patched"))
    c_in, c_out = (statistics.median(cases[k]) for k in ("in", "out"))
    return {"build_in_s": round(b_in, 1), "build_out_s": round(b_out, 1),
            "build_ratio": round(b_in / b_out, 3),
            "patched_build_s": round(b_patched, 1), "patched_vs_base": round(b_patched / b_in, 3),
            "case_in_s": round(c_in, 2), "case_out_s": round(c_out, 2),
            "case_ratio": round(c_in / c_out, 3),
            "runs_s": {k: [round(x, 1) for x in v] for k, v in {**builds, **{
                f"case_{k}": v for k, v in cases.items()}}.items()}}


def plain_tree() -> Path:
    """A hard-linked copy of the pristine source for plain make (the farm makes its own)."""
    tree = Path(tempfile.mkdtemp(prefix="bench-plain-"))
    RUNNER.run(["cp", "-al", source().path, tree / "src"])
    return tree


def bench_build(cold: bool) -> dict:
    out = {}
    ccache = CFG.cache / "ccache"
    # warm: the farm in a scratch cache (so it really builds) sharing the warm ccache, and
    # plain make in a hard-linked copy of the same source, in a new O= directory. Three
    # rounds, the first in the other order, each figure the fastest of its three: the build
    # that runs first in a round also warms the page cache for the other.
    farms, plains = [], []
    for rnd in range(rounds(3)):
        scratch = scratch_cache()
        tree = plain_tree()
        if rnd == 0:
            plains.append(plain_make(tree / "src", tree / "obj-plain", ccache, use_ccache=True))
            farms.append(farm_build(scratch))
        else:
            farms.append(farm_build(scratch))
            plains.append(plain_make(tree / "src", tree / "obj-plain", ccache, use_ccache=True))
        shutil.rmtree(tree)
        shutil.rmtree(scratch)
    farm, plain = min(farms), min(plains)
    out["warm"] = {"farm_s": round(farm, 1), "plain_make_s": round(plain, 1),
                   "ratio": round(farm / plain, 3), "farm_runs_s": [round(x, 1) for x in farms],
                   "plain_runs_s": [round(x, 1) for x in plains]}
    if cold:
        scratch = Path(tempfile.mkdtemp(prefix="bench-farm-cold-"))
        (scratch / "sources").symlink_to(CFG.cache / "sources")
        farm = farm_build(scratch)  # its own empty ccache
        tree = plain_tree()
        plain = plain_make(tree / "src", tree / "obj-plain", scratch / "unused", False)
        shutil.rmtree(tree)
        out["cold"] = {"farm_s": round(farm, 1), "plain_make_s": round(plain, 1),
                       "ratio": round(farm / plain, 3)}
        shutil.rmtree(scratch)
    return out


def bench_unchanged() -> dict:
    def request():
        return BuildRequest(CFG.variants[CFG.base], source(), CFG.base_config, CFG.fragments,
                            CFG.cache, 3, tuple(sorted({s.kselftest for s in CFG.scenarios
                                                        if s.kselftest})))

    def find():
        assert plan_build(request(), RUNNER).cached, "the base's build is not in the cache"
    build(request(), RUNNER, QUIET)  # the base built, if no run has built it yet
    runs = [timed(find) for _ in range(rounds(5))]
    return {"median_s": round(statistics.median(runs), 3), "runs_s": [round(r, 3) for r in runs]}


def bare_guest(machine, kernel: Path, initrd: Path, s, d: Path) -> None:
    """A bare QEMU run of the farm's guest command line for scenario s, booted, its agent
    port written to a file instead of the farm's socket, no QMP: what a case costs QEMU."""
    d.mkdir(parents=True)
    req = GuestRequest(machine, kernel, initrd, kernel_cmdline(s), d, 60)
    cmd = qemu_command(req, d / "qmp.sock", d / "agent.sock")
    cmd = [c.replace(f"socket,id=agent,path={d / 'agent.sock'},server=on,wait=off",
                     f"file,id=agent,path={d / 'agent.log'}") for c in cmd]
    cmd = cmd[:cmd.index("-qmp")] + cmd[cmd.index("-qmp") + 2:]
    RUNNER.run(cmd, timeout=60)
    assert '"event":"result"' in (d / "agent.log").read_text()


def bench_case() -> dict:
    """The farm's case restored from a snapshot, and booted cold, against a bare QEMU boot of
    the image the farm boots (the vmlinux through its PVH entry), and, for reference, a bare
    boot of the bzImage through the default firmware: what the PVH entry saves. The
    snapshot's own boot (once per shape and run) is made before the first restored case,
    and given apart."""
    s = next(s for s in CFG.scenarios if s.name == "anon-madvise")
    src = source()
    req = BuildRequest(CFG.variants[CFG.base], src, CFG.base_config, CFG.fragments, CFG.cache, 3)
    built = build(req, RUNNER, QUIET)
    image = build_image(CFG.guest_tests, CFG.cache, RUNNER)
    machine = Machine(cpu=CFG.guest.cpu, memory_mb=CFG.guest.memory_mb, accel="tcg")
    tmp = Path(tempfile.mkdtemp(prefix="bench-case-"))

    def farm_case(boot, i):
        one_case(s, i, tmp, f"farm-{boot}", built, image, machine, boot=boot)

    def bare_case(kernel, i):
        bare_guest(machine, kernel, image.initrd, s, tmp / f"bare-{kernel.name}" / str(i))

    made = timed(farm_case, "snapshot", 99)  # the snapshot's boot and save, then a case
    (made_doc,) = [json.loads(p.read_text()) for p in (tmp / "run" / "snapshots").glob("*.json")]
    snap, cold, bare, bz = [], [], [], []
    for i in range(rounds(7)):  # interleaved, so a noisy minute hits all four alike
        snap.append(timed(farm_case, "snapshot", i))
        cold.append(timed(farm_case, "cold", i))
        bare.append(timed(bare_case, Path(built.boot), i))
        bz.append(timed(bare_case, Path(built.kernel), i))
    shutil.rmtree(tmp)
    n, c, b, z = (statistics.median(x) for x in (snap, cold, bare, bz))
    return {"boot": built.boot_via, "snapshot_case_s": round(n, 2), "cold_case_s": round(c, 2),
            "bare_qemu_s": round(b, 2), "snapshot_vs_cold": round(n / c, 3),
            "snapshot_vs_bare": round(n / b, 3), "cold_vs_bare": round(c / b, 3),
            "snapshot_boot_and_save_s": made_doc["seconds"],
            "snapshot_mb": round(made_doc["bytes"] / 1e6, 1),
            "first_snapshot_case_s": round(made, 2),
            "bare_bzimage_firmware_s": round(z, 2), "pvh_saves": round(z / b, 3)}


def bench_snapshot() -> dict:
    """Whole runs by snapshot against the same runs cold, side by side: the warm default
    A/B run; the race set on the debug layer; -j 2 against -j 1 with snapshots; and a
    one-case `farm run` (the whole process) against a bare QEMU run of that case's own
    command line (median of 7 interleaved pairs)."""
    out = {}
    ab_snap, ab_cold = farm_run(), farm_run(boot="cold")
    out["default_ab"] = {"snapshot_s": round(ab_snap, 1), "cold_s": round(ab_cold, 1),
                         "ratio": round(ab_snap / ab_cold, 3)}
    names = ",".join(s.name for s in CFG.scenarios[:32])
    one = farm_run(variants=(CFG.base,), scenarios=names, jobs=1, confirm=0)
    two = farm_run(variants=(CFG.base,), scenarios=names, jobs=2, confirm=0)
    out["parallel"] = {"cases": 32, "j1_s": round(one, 1), "j2_s": round(two, 1),
                       "speedup": round(one / two, 3)}
    race = {boot: farm_run(variants=(CFG.base,), scenarios="race-*", confirm=0, seed=1,
                           layers=("debug",), boot=boot) for boot in ("snapshot", "cold")}
    out["races_debug"] = {"snapshot_s": round(race["snapshot"], 1),
                          "cold_s": round(race["cold"], 1),
                          "ratio": round(race["snapshot"] / race["cold"], 3)}
    out["one_case_run"] = one_case_run()
    return out


def one_case_run() -> dict:
    """`farm run --variants baseline --scenarios anon-madvise --confirm 0 -j 1` as a user
    runs it (a new process, warm cache, snapshot boot), against a bare QEMU boot of that
    case's guest (bare_guest), interleaved."""
    import subprocess
    s = next(s for s in CFG.scenarios if s.name == "anon-madvise")
    built = build(BuildRequest(CFG.variants[CFG.base], source(), CFG.base_config,
                               CFG.fragments, CFG.cache, 3), RUNNER, QUIET)
    image = build_image(CFG.guest_tests, CFG.cache, RUNNER)
    machine = Machine(cpu=CFG.guest.cpu, memory_mb=CFG.guest.memory_mb, accel="tcg")
    farm_s, bare_s = [], []
    with tempfile.TemporaryDirectory(prefix="bench-one-") as d:
        for i in range(rounds(7)):
            start = time.monotonic()
            subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", "--variants",
                            CFG.base, "--scenarios", s.name, "--confirm", "0", "-j", "1",
                            "--results", f"{d}/r{i}"], cwd=REPO, check=True,
                           capture_output=True)
            farm_s.append(time.monotonic() - start)
            bare_s.append(timed(bare_guest, machine, Path(built.boot), image.initrd, s,
                                Path(d) / f"bare{i}"))
    f, b = statistics.median(farm_s), statistics.median(bare_s)
    return {"farm_run_s": round(f, 2), "bare_qemu_s": round(b, 2), "ratio": round(f / b, 3)}


def bench_coverage() -> dict:
    """A coverage case against a plain one, and a coverage run against a plain run."""
    s = next(s for s in CFG.scenarios if s.name == "pagecache-clean-madvise")
    src = source()
    req = BuildRequest(CFG.variants[CFG.base], src, CFG.base_config, CFG.fragments, CFG.cache, 3)
    plain = build(req, RUNNER, QUIET)
    cov = build(replace(req, coverage=COVERAGE_DEFAULT), RUNNER, QUIET)
    image = build_image(CFG.guest_tests, CFG.cache, RUNNER)
    machine = Machine(cpu=CFG.guest.cpu, memory_mb=CFG.guest.memory_mb, accel="tcg")
    tmp = Path(tempfile.mkdtemp(prefix="bench-coverage-"))

    def case(b, i):
        rec = one_case(s, i, tmp, b.key, b, image, machine)
        assert b is plain or rec.coverage.get("files"), rec.coverage

    a, c = [], []
    for i in range(rounds(7)):  # interleaved
        a.append(timed(case, plain, i))
        c.append(timed(case, cov, i))
    shutil.rmtree(tmp)
    pa, pc = statistics.median(a), statistics.median(c)
    run_plain = farm_run(variants=(CFG.base,), confirm=0)
    run_cov = farm_run(variants=(CFG.base,), confirm=0, coverage=COVERAGE_DEFAULT)
    return {"plain_case_s": round(pa, 2), "coverage_case_s": round(pc, 2),
            "case_ratio": round(pc / pa, 3), "base_run_plain_s": round(run_plain, 1),
            "base_run_coverage_s": round(run_cov, 1), "run_ratio": round(run_cov / run_plain, 3)}


def bench_layers(layers=("debug", "kasan")) -> dict:
    """The same case on the plain kernel and on each layer's, side by side."""
    from orchestrator.plan import fragments_with
    s = next(s for s in CFG.scenarios if s.name == "pagecache-clean-madvise")
    src = source()
    builds = {}
    for layer in ("", *layers):
        frags = fragments_with(CFG, (layer,) if layer else ())
        req = BuildRequest(CFG.variants[CFG.base], src, CFG.base_config, frags, CFG.cache, 3,
                           layers=(layer,) if layer else ())
        builds[layer or "plain"] = build(req, RUNNER, QUIET)
    image = build_image(CFG.guest_tests, CFG.cache, RUNNER)
    machine = Machine(cpu=CFG.guest.cpu, memory_mb=CFG.guest.memory_mb, accel="tcg")
    tmp = Path(tempfile.mkdtemp(prefix="bench-layers-"))
    times: dict[str, list[float]] = {k: [] for k in builds}

    def case(name, b, i):
        one_case(s, i, tmp, name, b, image, machine, timeout=120)

    for i in range(rounds(5)):  # interleaved
        for name, b in builds.items():
            times[name].append(timed(case, name, b, i))
    shutil.rmtree(tmp)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"scenario": s.name, **{f"{k}_case_s": round(v, 2) for k, v in med.items()}}
    for layer in layers:
        out[f"{layer}_ratio"] = round(med[layer] / med["plain"], 3)
        rec = json.loads((Path(builds[layer].kernel).parent / "record.json").read_text())
        out[f"{layer}_build_s"] = rec.get("seconds")
    return out


def farm_run(**opts) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-run-") as d, \
            contextlib.redirect_stdout(io.StringIO()):  # the run's summary is not a figure
        return timed(run, CFG, RunOptions(results=Path(d) / "r", **opts), QUIET)


def bench_parallel() -> dict:
    names = ",".join(s.name for s in CFG.scenarios[:32])
    one = farm_run(variants=(CFG.base,), scenarios=names, jobs=1, confirm=0)
    two = farm_run(variants=(CFG.base,), scenarios=names, jobs=2, confirm=0)
    return {"cases": 32, "j1_s": round(one, 1), "j2_s": round(two, 1),
            "speedup": round(one / two, 3)}


def bench_ab() -> dict:
    """The default A/B run as it ships (its verdicts other than same confirmed by two more
    runs of each side), and the same run without confirmations, side by side."""
    confirmed, bare = farm_run(), farm_run(confirm=0)
    return {"default_ab_warm_s": round(confirmed, 1), "without_confirm_s": round(bare, 1),
            "confirm_cost": round(confirmed / bare, 3)}


def bench_bisect(n: int = 16, bad: int = 11) -> dict:
    """A series of n patches on mm/memory-failure.c: patch `bad` is the shipped demonstration
    patch, every other one appends a comment (a new build key each, warm ccache)."""
    import difflib

    from orchestrator.bisect import bisect
    from orchestrator.farmfile import Variant
    demo = CFG.variants["poison-clean-ptes"].patches[0]
    work = Path(tempfile.mkdtemp(prefix="bench-bisect-"))
    text = (source().path / "mm/memory-failure.c").read_text()
    stamp = time.strftime("%Y%m%d%H%M%S")  # new build keys on every run of the benchmark
    patches = []
    for i in range(1, n + 1):
        p = work / f"{i:04d}.patch"
        if i == bad:
            shutil.copy(demo, p)
        else:
            new = text + f"/* bisect benchmark {stamp}: patch {i} of {n} */\n"
            p.write_text(f"Subject: [PATCH {i}/{n}] mm/memory-failure: note {i}\n\n---\n" + "".join(
                difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                     "a/mm/memory-failure.c", "b/mm/memory-failure.c")))
            text = new
        patches.append(p)
    cfg = replace(CFG, variants={CFG.base: CFG.variants[CFG.base],
                                 "series": Variant("series", tuple(patches))})
    with contextlib.redirect_stdout(io.StringIO()):
        took = timed(bisect, cfg, "series", ["pagecache-clean-madvise"], 2, None,
                     work / "out", QUIET)
    doc = json.loads((work / "out" / "bisect.json").read_text())
    builds = {}
    for step in doc["steps"]:
        b = read_results(Path(step["results"])).variants[step["variant"]].build
        builds[step["prefix"]] = (b.status, b.seconds)
    fresh = [sec for st, sec in builds.values() if st == "built" and sec]
    base = bench_build(cold=False)["warm"]["plain_make_s"]
    (res,) = doc["results"]
    shutil.rmtree(work)
    return {"patches": n, "bad": bad, "found": res.get("first_bad"), "seconds": round(took, 1),
            "prefixes_built": sorted(k for k, (st, _) in builds.items() if st == "built"),
            "prefix_build_s": [round(x, 1) for x in fresh], "plain_warm_make_s": base,
            "worst_ratio": round(max(fresh) / base, 3) if fresh else None}


def bench_races() -> dict:
    """The race set (tier race, two vCPUs a guest), base alone, on the plain kernel and on
    the debug layer's, side by side, beside the same number of default-tier guests; one
    seed for all, so both kernels see the same delays."""
    races = [s.name for s in CFG.scenarios if s.race]
    plain = farm_run(variants=(CFG.base,), scenarios="race-*", confirm=0, seed=1)
    debug = farm_run(variants=(CFG.base,), scenarios="race-*", confirm=0, seed=1,
                     layers=("debug",))
    some = ",".join(s.name for s in CFG.scenarios if s.tier == "default"
                    and not s.kselftest)
    default = farm_run(variants=(CFG.base,), scenarios=",".join(some.split(",")[:len(races)]),
                       confirm=0)
    return {"race_scenarios": len(races),
            "rounds": sum(s.rounds for s in CFG.scenarios if s.race),
            "plain_s": round(plain, 1), "debug_s": round(debug, 1),
            "as_many_default_scenarios_s": round(default, 1),
            "debug_ratio": round(debug / plain, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated: build,unchanged,case,parallel,ab,bisect,"
                                   "coverage,layers,races,sandbox,snapshot")
    ap.add_argument("--cold", action="store_true", help="also the cold build (slow)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here too")
    ap.add_argument("--smoke", action="store_true",
                    help="one round of each, to check that a benchmark runs (no figure)")
    args = ap.parse_args()
    global SMOKE
    SMOKE = args.smoke
    names = (args.only or "build,unchanged,case,parallel,ab").split(",")
    benches = {"build": lambda: bench_build(args.cold), "unchanged": bench_unchanged,
               "case": bench_case, "parallel": bench_parallel, "ab": bench_ab,
               "bisect": bench_bisect, "coverage": bench_coverage, "layers": bench_layers,
               "races": bench_races, "sandbox": bench_sandbox, "snapshot": bench_snapshot}
    results = {"host": os.uname().nodename, "cpus": os.cpu_count(),
               "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name in names:
        print(f"== {name}", flush=True)
        results[name] = benches[name]()
        print(json.dumps(results[name]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
