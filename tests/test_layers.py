"""Config layers (--layer, layers: in farm.yaml) and guests with several vCPUs: validation,
build keys, what the reports say, and the QEMU command line."""

import json
import textwrap
from pathlib import Path

import pytest
from test_config import farm_dir, problems, write_farm  # noqa: F401  (a fixture)
from tests_support import run_info

from orchestrator.build import BuildRequest, build_key
from orchestrator.errors import InfraError, UserError
from orchestrator.farmfile import Variant, load_farm
from orchestrator.options import RunOptions
from orchestrator.plan import Matrix, fragments_with, plan_doc
from orchestrator.progress import Progress
from orchestrator.qemu import GuestRequest, Machine, guest_cpu, qemu_command
from orchestrator.runner import Runner
from orchestrator.saved import compare_dirs
from orchestrator.source import prepare_source

REPO = Path(__file__).parent.parent
FARM = """\
    source: {tarball: linux.tar.xz}
    variants: {baseline: {}}
    layers:
      debug: [debug.config]
"""


def test_the_shipped_layers_are_defined_and_checked_fragments():
    cfg = load_farm(REPO / "farm.yaml")
    assert set(cfg.layers) == {"debug", "kasan"}
    frag = cfg.layers["debug"][0].read_text()
    for opt in ("CONFIG_DEBUG_VM=y", "CONFIG_PROVE_LOCKING=y", "CONFIG_DEBUG_LIST=y",
                "CONFIG_DEBUG_VM_PGFLAGS=y", "CONFIG_LKDTM=y"):
        assert opt in frag
    assert "CONFIG_KASAN_GENERIC=y" in cfg.layers["kasan"][0].read_text()


def test_a_layer_is_checked_by_file_and_line(farm_dir):  # noqa: F811
    farm = write_farm(farm_dir, FARM + "      Bad_Name: [debug.config]\n      empty: []\n")
    got = problems(farm)
    assert any("farm.yaml:4:" in p and "no such file" in p and "debug.config" in p
               for p in got), got
    assert any("farm.yaml:5:" in p and "layer name 'Bad_Name'" in p for p in got), got
    assert any("farm.yaml:6:" in p and "a layer needs at least one fragment" in p
               for p in got), got


def test_an_unknown_layer_is_bad_input_and_the_plan_names_the_layers():
    cfg = load_farm(REPO / "farm.yaml")
    with pytest.raises(UserError, match=r"--layer: unknown layer\(s\) nope \(farm.yaml's "
                                        r"layers: debug, kasan\)"):
        Matrix.of(cfg, RunOptions(layers=("nope",)))
    m = Matrix.of(cfg, RunOptions(layers=("debug", "debug")))
    assert m.layers == ("debug",)
    assert plan_doc(cfg, RunOptions(layers=("debug",)))["layers"] == ["debug"]


def test_a_layer_is_part_of_the_build_key(tmp_path, fake_kernel):
    cfg = load_farm(REPO / "farm.yaml")
    from orchestrator.farmfile import Source
    src = prepare_source(Source("dir", fake_kernel), tmp_path, Runner(),
                         Progress(stream=open("/dev/null", "w")))
    plain = BuildRequest(Variant("b"), src, "tinyconfig", cfg.fragments, tmp_path, 1)
    debug = BuildRequest(Variant("b"), src, "tinyconfig",
                         fragments_with(cfg, ("debug",)), tmp_path, 1,
                         layers=("debug",))
    assert build_key(plain, "gcc") != build_key(debug, "gcc")


def test_runs_of_different_layers_are_not_compared(tmp_path):
    dirs = []
    for name, layers in (("plain", []), ("debug", ["debug"])):
        d = tmp_path / name
        d.mkdir()
        run = run_info(id=name, layers=layers).to_json()
        (d / "run.json").write_text(json.dumps({"run": run, "variants": {}}))
        (d / "results.json").write_text(json.dumps(
            {"schema": 1, "run": run, "variants": {"baseline": {}}, "cases": [],
             "comparison": [], "totals": {}}))
        dirs.append(d)
    with pytest.raises(UserError, match="different config layers"):
        compare_dirs(dirs, tmp_path / "out")


def test_several_vcpus_are_one_socket_each_with_a_host_thread_each(tmp_path):
    req = GuestRequest(Machine(cpus=2), Path("vmlinux"), Path("initrd"), "x", tmp_path, 10)
    cmd = qemu_command(req, tmp_path / "q", tmp_path / "a")
    assert cmd[cmd.index("-smp") + 1] == "2,sockets=2,cores=1,threads=1"
    assert cmd[cmd.index("-accel") + 1] == "tcg,thread=multi"
    one = qemu_command(GuestRequest(Machine(), Path("v"), Path("i"), "x", tmp_path, 10),
                       tmp_path / "q", tmp_path / "a")
    assert one[one.index("-smp") + 1] == "1" and one[one.index("-accel") + 1] == "tcg"


@pytest.mark.parametrize("value, ok", [(0, True), (1, True), (2, False), (-1, False),
                                       ("0", False), (True, False), (None, False)])
def test_the_vcpu_a_guest_names_is_checked_before_the_monitor_sees_it(value, ok):
    m = Machine(cpus=2)
    if ok:
        assert guest_cpu(value, m) == value
    else:
        with pytest.raises(InfraError, match="the guest named vCPU"):
            guest_cpu(value, m)


def test_cpus_are_bounded_in_farm_yaml_and_scenarios(farm_dir):  # noqa: F811
    scen = farm_dir / "guest-tests" / "scenarios.yaml"
    scen.write_text(scen.read_text().replace("    injector: madvise\n",
                                             "    injector: madvise\n    cpus: 9\n", 1))
    farm = write_farm(farm_dir, textwrap.dedent("""\
        source: {tarball: linux.tar.xz}
        variants: {baseline: {}}
        guest: {cpus: 0}
    """))
    got = problems(farm)
    assert any("farm.yaml:3:" in p and "guest.cpus must be 1 to 4, not 0" in p for p in got), got
    assert any("scenarios.yaml" in p and "cpus must be 1 to 4, not 9" in p for p in got), got
