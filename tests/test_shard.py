"""Sharding a run (`farm run --shard K/N`) and joining the shards (`farm merge`), on the
recorded real A/B run split the way `farm run --shard` splits it."""

import json
import shutil

import pytest
from conftest import REPO
from tests_support import check_junit

from orchestrator.cli import main
from orchestrator.farmfile import load_farm
from orchestrator.options import RunOptions
from orchestrator.outputs import report_dir
from orchestrator.plan import plan_doc, shard_of


def load(d):
    return json.loads((d / "results.json").read_text())


def split(data, tmp_path, n, keep=None):
    """The recorded run as the N result directories of `farm run --shard K/N` would be
    (only those in keep, if given)."""
    run_doc = json.loads((data / "run-ab" / "run.json").read_text())
    plan = json.loads((data / "run-ab" / "plan.json").read_text())["cases"]
    scenarios = list({spec["scenario"]["name"]: spec["scenario"] for spec in plan}.values())
    dirs = []
    for k in range(1, n + 1):
        if keep and k not in keep:
            continue
        d = tmp_path / f"shard-{k}"
        names = {s["name"] for s in shard_of(scenarios, (k, n))}
        for spec in plan:
            if spec["scenario"]["name"] in names:
                shutil.copytree(data / "run-ab" / spec["dir"], d / spec["dir"])
        meta = {**run_doc["run"], "shard": {"index": k, "count": n, "scenarios": scenarios}}
        (d / "run.json").write_text(json.dumps({**run_doc, "run": meta}))
        (d / "plan.json").write_text(json.dumps(
            {"cases": [s for s in plan if s["scenario"]["name"] in names]}))
        report_dir(d)
        dirs.append(d)
    return dirs


def test_shards_split_the_scenarios_into_disjoint_parts_that_cover_them_all():
    cfg = load_farm(REPO / "farm.yaml")
    names = [s.name for s in cfg.scenarios]
    for n in range(1, 9):
        parts = [[s.name for s in shard_of(cfg.scenarios, (k, n))] for k in range(1, n + 1)]
        assert sorted(sum(parts, [])) == sorted(names), n
        assert max(map(len, parts)) - min(map(len, parts)) <= 1, n
    doc = plan_doc(cfg, RunOptions(shard=(2, 3)))
    assert doc["shard"] == "2/3" and doc["cases"] == 2 * len(doc["scenarios"])


def test_bad_shards_are_refused_with_exit_2(capsys):
    for bad in ("0/3", "4/3", "1", "a/b", "1/0"):
        with pytest.raises(SystemExit) as e:
            main(["plan", "--shard", bad])
        assert e.value.code == 2, bad
    assert main(["plan", "--shard", "5/5", "--scenarios", "anon-madvise*"]) == 2
    assert "no scenario falls in this shard" in capsys.readouterr().err


def test_merging_every_shard_gives_the_unsharded_run(data, tmp_path, capsys):
    shards = split(data, tmp_path, 3)
    recorded = json.loads((data / "run-ab" / "results.json").read_text())
    out = tmp_path / "merged"
    assert main(["merge", *map(str, reversed(shards)), "--out", str(out)]) == 1
    doc = load(out)
    key = sorted((c["id"], c["status"], c["message"]) for c in doc["cases"])
    assert key == sorted((c["id"], c["status"], c["message"]) for c in recorded["cases"])
    assert sorted(map(json.dumps, doc["comparison"])) == \
        sorted(map(json.dumps, recorded["comparison"]))
    assert doc["run"]["missing_shards"] == [] and len(doc["run"]["merged"]) == 3
    check_junit(out, doc)
    for c in doc["cases"]:
        assert (out / c["logs"]["console"]).is_file(), c["id"]
    assert "| pagecache-clean-madvise | pass (clean LRU page: Recovered) | fail" in \
        capsys.readouterr().out


def test_a_missing_shard_leaves_its_cases_as_errors(data, tmp_path):
    shards = split(data, tmp_path, 3, keep={1, 3})
    out = tmp_path / "merged"
    main(["merge", *map(str, shards), "--out", str(out)])
    doc = load(out)
    lost = [c for c in doc["cases"] if c["status"] == "error"]
    assert lost and all("shard(s) 2/3 not among the merged" in c["message"] for c in lost)
    assert len(doc["cases"]) == len(load(data / "run-ab")["cases"])
    assert doc["run"]["missing_shards"] == ["2/3"]
    check_junit(out, doc)


def test_merge_refuses_what_is_not_one_run(data, tmp_path, capsys):
    one, two = split(data, tmp_path, 2)
    other = tmp_path / "other"
    shutil.copytree(two, other)
    cases = [
        ([one, one], "is given twice"),
        ([one, data / "run-ab"], "not a shard"),
        ([one, tmp_path / "nowhere"], "not a farm result directory"),
    ]
    run_doc = json.loads((other / "run.json").read_text())
    run_doc["variants"]["poison-clean-ptes"]["build"]["key"] = "0" * 20
    (other / "run.json").write_text(json.dumps(run_doc))
    cases.append(([one, other], "built from other inputs"))
    for dirs, why in cases:
        assert main(["merge", *map(str, dirs), "--out", str(tmp_path / "m")]) == 2, why
        assert why in capsys.readouterr().err
    assert main(["merge", str(one), str(two), "--out", str(tmp_path / "m")]) == 1
    assert main(["merge", str(one), str(two), "--out", str(tmp_path / "m")]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_hosts_command_line_keeps_the_tier_and_its_shards_cover_it():
    from orchestrator.options import host_args
    assert host_args(RunOptions(tier="full", repeat=2), 7) == [
        "--repeat", "2", "--tier", "full", "--seed", "7"]
    assert "--tier" not in host_args(RunOptions(), 7)
    # --affected chose the scenarios here; a host runs those, with the same coverage
    assert host_args(RunOptions(scenarios="anon-*", names=("anon-madvise", "anon-soft"),
                                coverage=("mm/memory-failure.c",), jobs=3, confirm=0), 7) == [
        "--scenarios", "anon-madvise,anon-soft", "--coverage", "mm/memory-failure.c",
        "--confirm", "0", "--seed", "7"]
    cfg = load_farm(REPO / "farm.yaml")
    full = plan_doc(cfg, RunOptions(tier="full"))
    shards = [plan_doc(cfg, RunOptions(tier="full", shard=(k, 4))) for k in range(1, 5)]
    assert sum(len(d["scenarios"]) for d in shards) == len(full["scenarios"])
    assert {r["tier"] for r in full["scenarios"]} == {"default", "full", "race"}
