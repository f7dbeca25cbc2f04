"""Git branches as variants: a variant of a git source that names a `ref:` (its commits since
the source's ref) or a range of `commits:` (A..B) has those commits, in order, as its patch
series, one `git format-patch` file per commit kept in the cache under the commit's id, so
the build, `farm bisect` and the reports take it like any other series. Every ref is checked
before anything is built: one that does not exist, a range that is empty, a merge commit in a
range or a branch that does not contain its base is bad input, named."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from .errors import UserError
from .farmfile import COMMITS_RE, FarmConfig, Source, Variant
from .files import atomic_write
from .runner import Runner
from .source import commit_of

SLUG_RE = re.compile(r"[^A-Za-z0-9._-]+")


def range_of(text: str) -> tuple[str, str] | None:
    """'A..B' as (A, B), each a git ref the farm accepts; None when it is not one."""
    if not COMMITS_RE.match(text):
        return None
    a, _, b = text.partition("..")
    return a, b


def on_branch(cfg: FarmConfig, repo: Path | None, commits: str | None) -> FarmConfig:
    """`--git REPO --commits BASE..BRANCH`: the farm with that repository's BASE as its source
    and baseline, and BRANCH's commits since it as the one variant beside it."""
    if not (repo and commits):
        raise UserError("--git and --commits go together: --git ~/linux --commits "
                        "v6.12..my-fix")
    ends = range_of(commits)
    if ends is None:
        raise UserError(f"--commits: {commits[:80]!r} is not a range of commits BASE..BRANCH "
                        "(like v6.12..my-fix)")
    repo = repo.expanduser().resolve()
    if not (repo / ".git").exists():
        raise UserError(f"--git: not a git repository: {repo}")
    name = SLUG_RE.sub("-", ends[1].lower()).strip("-.")[:48] or "branch"
    name = name if name != "baseline" else "branch"
    variants = {"baseline": Variant("baseline", description=f"{repo} at {ends[0]}"),
                name: Variant(name, description=f"{repo}: the commits {commits}",
                              commits=commits)}
    return replace(cfg, source=Source("git", repo, ends[0]), variants=variants,
                   base="baseline")


def resolve_series(cfg: FarmConfig, runner: Runner | None = None) -> FarmConfig:
    """The farm with every git variant's commits turned into its patch series."""
    runner = runner or Runner()
    variants = {}
    for name, v in cfg.variants.items():
        if not (v.commits or v.ref):
            variants[name] = v
            continue
        source = cfg.source_of(name)
        if source.kind != "git":
            raise UserError(f"variant {name}: commits come from a git source (source: {{git: "
                            f"..., ref: ...}}), not {source.describe()}")
        variants[name] = replace(v, patches=series(source, name, v, cfg.cache, runner))
    return replace(cfg, variants=variants)


def series(source: Source, name: str, v: Variant, cache: Path,
           runner: Runner) -> tuple[Path, ...]:
    """The variant's commits as patch files, oldest first."""
    if v.ref:  # the commits since the source's ref, which the branch must contain
        base, tip, where = source.ref or "HEAD", v.ref, f"variant {name}: ref {v.ref}"
    else:
        (base, tip), where = range_of(v.commits), f"variant {name}: commits {v.commits}"
    ids = {ref: _commit(source.path, ref, where, runner) for ref in (base, tip)}
    if v.ref and runner.run(["git", "-C", source.path, "merge-base",
                                          "--is-ancestor", ids[base], ids[tip]],
                                         check=False).returncode:
        raise UserError(f"{where} does not contain the source's ref {base}: rebase it onto "
                        f"{base}, or name the range with commits: BASE..{tip}")
    listed = _git(source.path, ["rev-list", "--reverse", "--topo-order", "--parents",
                                f"{ids[base]}..{ids[tip]}"], where, runner).split("\n")
    commits = [line.split() for line in listed if line.strip()]
    if not commits:
        raise UserError(f"{where}: the range is empty (no commit of {tip} is not in {base})")
    merges = [c[0][:12] for c in commits if len(c) > 2]
    if merges:
        raise UserError(f"{where}: {len(merges)} merge commit(s) in the range ({', '.join(merges)}"
                        "): a series is a line of commits; name a range without merges")
    return tuple(_patch(source.path, c[0], cache, where, runner) for c in commits)


def _commit(repo: Path, ref: str, where: str, runner: Runner) -> str:
    sha = commit_of(repo, ref, runner)
    if sha is None:
        raise UserError(f"{where}: {repo} has no commit '{ref}'")
    return sha


def _git(repo: Path, args: list[str], where: str, runner: Runner) -> str:
    out = runner.run(["git", "-C", repo, *args], check=False)
    if out.returncode:
        raise UserError(f"{where}: git {args[0]} failed: {out.output.strip()[-300:]}")
    return out.output


def _patch(repo: Path, sha: str, cache: Path, where: str, runner: Runner) -> Path:
    """One commit as a patch file in the cache, named by its id and subject; a commit's
    patch never changes, so one made before is used again."""
    subject = SLUG_RE.sub("-", _git(repo, ["log", "-1", "--format=%f", sha], where,
                                    runner).strip())[:52].strip("-.")
    path = cache / "series" / f"{sha[:12]}-{subject or 'commit'}.patch"
    if not path.is_file():
        text = _git(repo, ["format-patch", "-1", "--stdout", "--no-renames", "--no-signature",
                           "--full-index", sha], where, runner)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    return path
