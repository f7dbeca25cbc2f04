"""The build stage (source.py, build.py, kselftests.py) on a fake kernel tree: real make, real
patch, real ccache."""

import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.build import (
    BuildRequest,
    build,
    build_key,
    check_config,
    compile_kernel,
    plan_build,
    prepare_tree,
)
from orchestrator.errors import UserError
from orchestrator.farmfile import Source, Variant
from orchestrator.kselftests import kselftests_of
from orchestrator.progress import Progress
from orchestrator.runner import Runner
from orchestrator.source import _hunk_failures, prepare_source

GOOD_PATCH = """\
--- a/mm/memory-failure.c
+++ b/mm/memory-failure.c
@@ -3,7 +3,7 @@
 {
 \tint ret = 0;
 \n-\tif (dirty)
+\tif (!dirty)
 \t\tret = 1;
 \treturn ret;
 }
"""
BAD_PATCH = GOOD_PATCH.replace("\tint ret = 0;", "\tint ret = 42;")


@pytest.fixture
def env(tmp_path, fake_kernel):
    commands = []
    runner = Runner(on_command=commands.append)
    progress = Progress(stream=open(tmp_path / "progress.txt", "w"))
    cache = tmp_path / "cache"
    src = prepare_source(Source("dir", fake_kernel), cache, runner, progress)
    frag = tmp_path / "farm.config"
    frag.write_text("CONFIG_MEMORY_FAILURE=y\n# CONFIG_PRINTK is not set\n")

    def req(variant=None, fragments=(frag,)):
        return BuildRequest(variant or Variant("baseline"), src, "tinyconfig",
                            tuple(fragments), cache, 2)

    return runner, progress, req, commands, tmp_path


def write(path, text):
    path.write_text(text)
    return path


def test_build_then_found_in_cache(env):
    runner, progress, req, commands, _ = env
    first = build(req(), runner, progress)
    assert first.status == "built"
    assert first.release == "6.12.0-fake"
    image = open(first.kernel, "rb").read()
    assert b"CONFIG_MEMORY_FAILURE=y" in image
    n = len(commands)
    again = build(req(), runner, progress)
    assert again.status == "cached"
    assert again.key == first.key
    assert not any(c.startswith("make") for c in commands[n:]), "a cached build ran make"


def test_boot_image_is_vmlinux_with_a_pvh_entry_else_bzimage(env):
    runner, progress, req, _, tmp = env
    plain = build(req(), runner, progress)
    assert (plain.boot_via, plain.boot) == ("bzimage", plain.kernel)
    pvh = build(req(fragments=(write(tmp / "pvh.config", "CONFIG_PVH=y\n"),)), runner, progress)
    assert pvh.boot_via == "pvh" and pvh.boot.endswith("/vmlinux")
    assert b"CONFIG_PVH=y" in open(pvh.boot, "rb").read()
    assert build(req(fragments=(tmp / "pvh.config",)), runner, progress).boot == pvh.boot
    # a KASAN kernel does not start through the PVH entry: it boots the bzImage
    kasan = build(req(fragments=(write(tmp / "kasan.config", "CONFIG_PVH=y\nCONFIG_KASAN=y\n"),)),
                  runner, progress)
    assert (kasan.boot_via, kasan.boot) == ("bzimage", kasan.kernel)


def test_commands_are_logged_shell_quoted(env):
    runner, progress, req, commands, _ = env
    build(req(), runner, progress)
    make = [c for c in commands if " make -C " in c and "bzImage" in c]
    assert make and "'CC=ccache gcc'" in make[0]


def test_patch_is_applied_and_source_stays_pristine(env, fake_kernel):
    runner, progress, req, _, tmp = env
    before = (fake_kernel / "mm/memory-failure.c").read_text()
    base = build(req(), runner, progress)
    patched = build(req(Variant("fix", (write(tmp / "0001.patch", GOOD_PATCH),))),
                    runner, progress)
    assert patched.key != base.key
    assert patched.patches[0]["path"].endswith("0001.patch")
    assert (fake_kernel / "mm/memory-failure.c").read_text() == before
    assert open(patched.kernel, "rb").read() != open(base.kernel, "rb").read()


def test_patch_that_does_not_apply_names_patch_file_and_hunk(env):
    runner, progress, req, _, tmp = env
    bad = write(tmp / "0002-bad.patch", BAD_PATCH)
    with pytest.raises(UserError) as e:
        build(req(Variant("broken", (bad,))), runner, progress)
    msg = str(e.value)
    assert "broken" in msg and str(bad) in msg
    assert "mm/memory-failure.c" in msg and "hunk #1" in msg


def test_second_patch_of_a_series_failing_names_it(env):
    runner, progress, req, _, tmp = env
    good = write(tmp / "0001.patch", GOOD_PATCH)
    again = write(tmp / "0002.patch", GOOD_PATCH)  # applies to the unpatched file only
    with pytest.raises(UserError, match=r"patch 2/2 does not apply: .*0002.patch"):
        build(req(Variant("series", (good, again))), runner, progress)


def test_config_option_that_does_not_hold_is_reported_with_fragment_line(env):
    runner, progress, req, _, tmp = env
    frag = write(tmp / "extra.config", "CONFIG_HWPOISON_INJECT=y\nCONFIG_NO_SUCH_OPTION=y\n")
    with pytest.raises(UserError) as e:
        build(req(fragments=(frag,)), runner, progress)
    assert f"{frag}:2: CONFIG_NO_SUCH_OPTION=y requested" in str(e.value)
    assert "HWPOISON_INJECT" not in str(e.value)


def test_a_kernel_that_does_not_build_is_a_result_with_its_log_and_is_not_published(env):
    runner, progress, req, _, tmp = env
    # a failure of the moment, from outside the build's inputs (the environment no longer
    # reaches a sandboxed build: the fake tree looks in the ccache it is given)
    (tmp / "cache" / "ccache").mkdir(parents=True, exist_ok=True)
    (tmp / "cache" / "ccache" / "fake-build-fail").touch()
    failed = build(req(), runner, progress)
    assert (failed.status, failed.ok) == ("failed", False)
    assert failed.error == "kernel build failed (exit 2)"
    assert failed.error_lines[0] == "mm/memory-failure.c:1: error: asked to fail"
    assert "asked to fail" in open(failed.log).read()
    assert not (tmp / "cache" / "builds" / failed.key).exists()
    assert not list((tmp / "cache" / "work").iterdir()), "the work tree was left behind"
    (tmp / "cache" / "ccache" / "fake-build-fail").unlink()
    assert build(req(), runner, progress).status == "built"  # tried again, not remembered


def test_check_config_reads_not_set_lines(tmp_path):
    frag = write(tmp_path / "f.config", "# CONFIG_PRINTK is not set\nCONFIG_SWAP=y\n")
    problems = check_config("CONFIG_PRINTK=y\nCONFIG_SWAP=y\n", (frag,))
    assert problems == [f"{frag}:1: CONFIG_PRINTK=n requested, but the kernel's .config has "
                        "CONFIG_PRINTK=y (a dependency is missing?)"]


def test_hunk_failures_from_recorded_patch_output():
    out = ("patching file mm/memory-failure.c\nHunk #1 FAILED at 992.\n"
           "Hunk #3 FAILED at 1501.\n2 out of 3 hunks FAILED\n")
    assert _hunk_failures(out) == ["file mm/memory-failure.c, hunk #1 (at line 992)",
                                   "file mm/memory-failure.c, hunk #3 (at line 1501)"]


def test_kselftests_are_keyed_apart_from_the_kernel_and_tell_what_they_printed(env):
    """A selftest program of the (fake) tree: built beside the kernel under a key of its
    own, so asking for it or not never changes the kernel's key, and a kernel change does
    not rebuild it; its stdout is line-buffered, so what it printed before SIGBUS killed it
    comes through a pipe."""
    runner, progress, req, commands, tmp_path = env
    prog = "mm/fake-hwpoison"
    plain = req()
    with_test = replace(plain, kselftests=(prog, "mm/not-there", "auto"))
    assert build_key(plain, "gcc") == build_key(with_test, "gcc")
    first = build(with_test, runner, progress)
    plan = plan_build(with_test, runner)
    built, failed = kselftests_of(with_test, plan, runner, progress)  # prepares its tree
    if plan.work:
        plan.work.remove()
    assert failed == {"mm/not-there": "not in this kernel tree: "
                                      "tools/testing/selftests/mm/not-there.c"}
    exe = built[prog]
    assert Path(exe).is_file() and first.key not in exe
    # kselftest: auto: every program whose name says memory failure, here the one
    assert sorted(p.name for p in Path(built["auto"]).iterdir()) == ["mm-fake-hwpoison"]
    # built by its directory's Makefile, with its helper, against the exported headers
    assert any("make -C" in c and "KHDR_INCLUDES=-isystem" in c and "fake-hwpoison" in c
               for c in commands)
    res = subprocess.run([exe], capture_output=True, text=True)
    assert res.returncode == -signal.SIGBUS
    assert res.stdout == "TAP version 13\n1..1\n# about to touch the poisoned page\n"
    other = tmp_path / "other.config"
    other.write_text("CONFIG_MEMORY_FAILURE=y\n")
    n = len(commands)
    again, _ = kselftests_of(replace(with_test, fragments=(other,)),
                             plan_build(replace(with_test, fragments=(other,)), runner),
                             runner, progress)
    assert again == built  # another kernel config, the same test binary
    assert not any("fake-hwpoison" in c for c in commands[n:]), "the test was rebuilt"
    # a kernel built now removes its tree: a test still to build prepares one again
    shutil.rmtree(tmp_path / "cache" / "kselftests")
    fresh = replace(with_test, fragments=(other,))
    plan = plan_build(fresh, runner)
    prepare_tree(fresh, plan, runner, progress)
    compile_kernel(fresh, plan, runner, progress)
    assert plan.work is None
    rebuilt, _ = kselftests_of(fresh, plan, runner, progress)
    assert Path(rebuilt[prog]).is_file()
    if plan.work:
        plan.work.remove()


def test_variants_of_one_key_are_one_build_made_once(tmp_path, fake_kernel):
    """An A/A farm (kernels/aa.yaml) names the same kernel twice: with nothing cached, the
    first variant builds it and the second takes that build (two trees of one key in one
    run would each lock the other out)."""
    from orchestrator.farmfile import load_farm
    from orchestrator.options import RunOptions
    from orchestrator.plan import Matrix
    from orchestrator.run import build_variants

    (tmp_path / "farm.config").write_text("CONFIG_MEMORY_FAILURE=y\n")
    farm = tmp_path / "farm.yaml"
    farm.write_text(f"source: {{dir: {fake_kernel}}}\n"
                    "config: {base: tinyconfig, fragments: [farm.config]}\n"
                    "variants: {baseline: {}, baseline-again: {}}\n"
                    f"cache: {tmp_path / 'cache'}\n"
                    f"scenarios: {Path(__file__).parent.parent / 'guest-tests/scenarios.yaml'}\n")
    cfg = load_farm(farm)
    commands = []
    runner = Runner(on_command=commands.append)
    progress = Progress(stream=open(tmp_path / "progress.txt", "w"))
    trees = {cfg.source: prepare_source(cfg.source, cfg.cache, runner, progress)}
    (tmp_path / "results").mkdir()
    builds = build_variants(cfg, Matrix.of(cfg, RunOptions(scenarios="anon-madvise")), trees,
                            runner, progress, tmp_path / "results")
    assert builds["baseline"].status == "built", builds["baseline"]
    assert builds["baseline-again"].status == "cached"
    assert builds["baseline-again"].key == builds["baseline"].key
    assert builds["baseline-again"].variant == "baseline-again"
    assert sum(" make -C " in c and "bzImage" in c for c in commands) == 1
