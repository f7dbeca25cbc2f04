"""Git branches as variants, on a real git repository of the fake kernel tree: a `ref:` or a
range of `commits:` becomes the variant's series, one format-patch file per commit, in order,
applied and built like any series; a ref that does not exist, an empty range, a merge commit
or a branch that does not contain its base is bad input before anything is built;
`--git REPO --commits BASE..BRANCH` runs a branch with no farm.yaml edited."""

import subprocess
import textwrap
from pathlib import Path

import pytest

from orchestrator.build import BuildRequest, build
from orchestrator.cli import main
from orchestrator.errors import ConfigErrors, UserError
from orchestrator.farmfile import load_farm
from orchestrator.gitseries import on_branch, resolve_series
from orchestrator.progress import Progress
from orchestrator.runner import Runner
from orchestrator.source import apply_patches, prepare_source, writable_for_builds

REPO = Path(__file__).parent.parent


def git(repo, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo),
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, rel: str, text: str, message: str) -> str:
    (repo / rel).write_text(text)
    git(repo, "commit", "-qam", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(fake_kernel):
    """v1, then the branch fix with two commits on it; master moves on by one of its own."""
    git(fake_kernel, "init", "-q", "-b", "master")
    git(fake_kernel, "add", "-A")
    git(fake_kernel, "commit", "-qm", "v1")
    git(fake_kernel, "tag", "v1")
    git(fake_kernel, "checkout", "-qb", "fix")
    mf = fake_kernel / "mm/memory-failure.c"
    text = mf.read_text()
    commit(fake_kernel, "mm/memory-failure.c", text + "int fix_one;\n", "mm: the first fix")
    commit(fake_kernel, "mm/memory-failure.c", text + "int fix_one;\nint fix_two;\n",
           "mm: and the second")
    git(fake_kernel, "checkout", "-q", "master")
    commit(fake_kernel, "Kconfig.known", (fake_kernel / "Kconfig.known").read_text() + "\n",
           "elsewhere")
    return fake_kernel


def farm(tmp_path: Path, repo: Path, variants: str, source: str = "") -> Path:
    (tmp_path / "farm.yaml").write_text(textwrap.dedent(f"""\
        source: {source or f'{{git: {repo}, ref: v1}}'}
        scenarios: {REPO}/guest-tests/scenarios.yaml
        guest_tests: {REPO}/guest-tests
        cache: cache
        variants:
          baseline: {{}}
        """) + textwrap.indent(textwrap.dedent(variants), "  "))
    return tmp_path / "farm.yaml"


def test_a_branch_is_its_commits_since_the_base_applied_and_built(tmp_path, repo):
    cfg = resolve_series(load_farm(farm(tmp_path, repo, "fix: {ref: fix}\n")))
    series = cfg.variants["fix"].patches
    assert [p.name.split("-", 1)[1] for p in series] == ["mm-the-first-fix.patch",
                                                         "mm-and-the-second.patch"]
    assert series[0].name[:12] == git(repo, "rev-parse", "fix~1")[:12]
    assert series[0].read_text().startswith("From ") and "+int fix_one;" in series[0].read_text()
    runner, progress = Runner(), Progress(stream=open(tmp_path / "p", "w"))
    src = prepare_source(cfg.source, cfg.cache, runner, progress)
    res = build(BuildRequest(cfg.variants["fix"], src, "tinyconfig", (), cfg.cache, 2), runner,
                progress)
    assert res.status == "built" and [Path(p["path"]).name for p in res.patches] == [
        p.name for p in series]
    # the same commits as a range give the same files; a prefix is a prefix of the series
    again = resolve_series(load_farm(farm(tmp_path, repo, "fix: {commits: v1..fix}\n")))
    assert again.variants["fix"].patches == series
    one = resolve_series(load_farm(farm(tmp_path, repo, "fix: {commits: v1..fix~1}\n")))
    assert one.variants["fix"].patches == series[:1]
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(src.path), str(tree)], check=True)
    writable_for_builds(tree, runner)
    apply_patches(tree, series, runner, tmp_path / "apply.log")
    assert "int fix_two;" in (tree / "mm/memory-failure.c").read_text()


@pytest.mark.parametrize("variants, message", [
    ("fix: {ref: nope}\n", "variant fix: ref nope: .* has no commit 'nope'"),
    ("fix: {commits: fix..v1}\n", "the range is empty"),
    ("fix: {ref: v1}\n", "the range is empty"),
    ("fix: {ref: fix}\n", "does not contain the source's ref master"),
    ("fix: {commits: v1..merged}\n", "1 merge commit\\(s\\) in the range"),
])
def test_a_ref_or_range_that_is_no_series_is_named_before_anything_is_built(
        tmp_path, repo, variants, message):
    git(repo, "checkout", "-qb", "merged", "fix")
    git(repo, "merge", "-q", "--no-edit", "master")
    git(repo, "checkout", "-q", "master")
    source = f"{{git: {repo}, ref: master}}" if "ref: fix" in variants else ""
    cfg = load_farm(farm(tmp_path, repo, variants, source))
    with pytest.raises(UserError, match=message):
        resolve_series(cfg)
    assert not (tmp_path / "cache" / "builds").exists()


@pytest.mark.parametrize("variants, message", [
    ("fix: {ref: fix, patches: [x.patch]}\n", "a series is patches, a ref or commits: one of "
                                              "them, not patches and ref"),
    ("fix: {commits: 'v1...fix'}\n", "is not a range of commits A..B"),
    ("fix: {ref: '-x'}\n", "is not a git ref"),
])
def test_a_bad_ref_in_farm_yaml_is_named_with_its_line(tmp_path, repo, variants, message):
    (tmp_path / "x.patch").write_text("")
    with pytest.raises(ConfigErrors) as e:
        load_farm(farm(tmp_path, repo, variants))
    assert any(message in p and p.startswith(f"{tmp_path / 'farm.yaml'}:") for p in
               e.value.problems), e.value.problems


def test_commits_need_a_git_source(tmp_path, repo):
    (tmp_path / "linux.tar.xz").write_bytes(b"")
    with pytest.raises(ConfigErrors) as e:
        load_farm(farm(tmp_path, repo, "fix: {ref: fix}\n", "{tarball: linux.tar.xz}"))
    assert any("ref and commits are commits of a git source" in p for p in e.value.problems)


def test_a_branch_from_the_command_line_with_no_farm_yaml_edited(tmp_path, repo, capsys):
    cfg = resolve_series(on_branch(load_farm(farm(tmp_path, repo, "")), repo, "v1..fix"))
    assert list(cfg.variants) == ["baseline", "fix"] and cfg.base == "baseline"
    assert (cfg.source.kind, cfg.source.ref) == ("git", "v1")
    assert len(cfg.variants["fix"].patches) == 2
    code = main(["plan", "-c", str(tmp_path / "farm.yaml"), "--git", str(repo), "--commits",
                 "v1..fix", "--scenarios", "anon-madvise"])
    assert code == 0 and "(baseline, fix; base baseline)" in capsys.readouterr().out
    assert main(["validate", "-c", str(tmp_path / "farm.yaml"), "--git", str(repo),
                 "--commits", "v1..nope"]) == 2
    assert "has no commit 'nope'" in capsys.readouterr().err
    assert main(["plan", "-c", str(tmp_path / "farm.yaml"), "--commits", "v1..fix"]) == 2
    assert "--git and --commits go together" in capsys.readouterr().err
