"""A run over a pool of hosts: the matrix is split into one shard per host (`--shard K/N`),
the farm and its configuration are copied to each host over SSH (fabric), each host runs
its shard with its own cache, and the shards' result directories come back and are merged
into one, as `farm merge` does. Every remote step goes through the SSH runner, logged as a
command a user can paste."""

from __future__ import annotations

import tarfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from .caserecords import plan_json
from .errors import FarmError, InfraError, UserError
from .farmfile import FarmConfig
from .farmhosts import Host
from .files import results_for, write_json
from .options import RunOptions, host_args
from .outputs import report_dir
from .plan import Matrix, run_meta, shard_of, skeleton, variant_docs
from .progress import Progress, fmt_seconds
from .results import write_run_json
from .runner import Runner, log_commands, stop_logging
from .saved import merge_dirs
from .signals import deferred_signals
from .ssh import SSHRunner

FARM_ROOT = Path(__file__).resolve().parent.parent  # the checkout this farm runs from
NOT_SHIPPED = (".git", ".venv", ".tox", "results", "__pycache__", ".ruff_cache",
               ".pytest_cache")


def _under(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def shipped_config(cfg: FarmConfig) -> tuple[Path, PurePosixPath]:
    """The directory to copy for the configuration, and where farm.yaml lands in the copy.
    Everything farm.yaml names by path (patches, fragments, scenarios, guest tests) has to
    come along, so it must live in the farm's checkout or beside farm.yaml."""
    if not (FARM_ROOT / "scripts" / "setup.sh").is_file():
        raise UserError(f"to run on hosts, the farm must run from its checkout (it copies "
                        f"it to each host); this one is installed in {FARM_ROOT}")
    roots = [FARM_ROOT, cfg.path.parent]
    named = [*cfg.fragments, *(f for fs in cfg.layers.values() for f in fs),
             cfg.scenarios_path, cfg.guest_tests]
    for v in cfg.variants.values():
        named += [*v.patches, *v.fragments]
    outside = [p for p in named if not any(_under(p.resolve(), r) for r in roots)]
    if outside:
        raise UserError(f"{cfg.path}: to run on hosts, what farm.yaml names must be in "
                        f"{FARM_ROOT} or in {cfg.path.parent}; not so: "
                        + ", ".join(map(str, outside)))
    if _under(cfg.path, FARM_ROOT):
        return FARM_ROOT, PurePosixPath("farm", cfg.path.relative_to(FARM_ROOT).as_posix())
    return cfg.path.parent, PurePosixPath("config", cfg.path.name)


def _pack(cfg: FarmConfig, dest: Path, runner: Runner) -> PurePosixPath:
    """One tar file with the farm (as farm/) and, if it lives elsewhere, the directory of
    farm.yaml (as config/). Returns farm.yaml's path inside it."""
    conf_dir, conf_path = shipped_config(cfg)
    excludes = [f"--exclude={name}" for name in NOT_SHIPPED]
    parts = [("farm", FARM_ROOT)] + ([("config", conf_dir)] if conf_dir != FARM_ROOT else [])
    dest.unlink(missing_ok=True)
    for top, root in parts:  # tar -r appends; the first call creates the file
        entries = sorted(p.name for p in root.iterdir() if p.name not in NOT_SHIPPED)
        runner.run(["tar", "-rf", dest, *excludes, "--transform", f"s,^,{top}/,", "-C", root,
                    *entries])
    return conf_path


@dataclass
class _Shard:
    host: Host
    index: int
    count: int
    result: Path | None = None  # the shard's result directory, fetched
    error: str | None = None
    ssh: SSHRunner | None = None  # while it runs: closing it stops the host's farm run

    @property
    def label(self) -> str:
        return f"{self.host.ssh} ({self.index}/{self.count})"


def _run_shard(shard: _Shard, cfg_in_pack: PurePosixPath, pack: Path, args: list[str],
               jobs_asked: int | None, run_id: str, local: Path, progress: Progress,
               log: Path) -> None:
    host = shard.host
    ssh = None
    try:
        ssh = shard.ssh = SSHRunner(host.ssh, host.key, known_hosts=host.known_hosts,
                                    accept_new=host.accept_new)
        top = PurePosixPath(host.dir)
        farm = top / "farm"
        name = f"{run_id}-shard-{shard.index}-of-{shard.count}"
        remote_results = top / "results" / name
        ssh.run(["mkdir", "-p", top / "results", farm], log_path=log)
        # a fresh copy of the farm each time, keeping the host's virtualenv between runs
        ssh.run(["find", farm, "-mindepth", "1", "-maxdepth", "1", "!", "-name", ".venv",
                 "-exec", "rm", "-rf", "{}", "+"], log_path=log)
        ssh.run(["rm", "-rf", top / "config", top / "farm.tar"], log_path=log)
        ssh.put(pack, top / "farm.tar")
        ssh.run(["tar", "-xf", top / "farm.tar", "-C", top], log_path=log)
        ssh.run(["scripts/setup.sh"], cwd=farm, log_path=log)
        progress.say(f"{shard.label}: running shard {shard.index}/{shard.count}")
        jobs = host.jobs or jobs_asked
        jobs = ["-j", str(jobs)] if jobs else []
        # on a terminal of its own, which hangs up when the connection here closes: the
        # host's farm then stops as it does on Ctrl-C (SIGHUP), its guests with it
        res = ssh.run([".venv/bin/farm", "run", "--local", "-c", top / cfg_in_pack, "--shard",
                       f"{shard.index}/{shard.count}", "--results", remote_results, *jobs,
                       *args], cwd=farm, env={"TERM": "dumb"}, log_path=log, check=False,
                      pty=True, on_line=lambda line: line.startswith("[") and progress.say(
                          f"{shard.label}: {line}"))
        if res.returncode not in (0, 1):
            last = [ln for ln in res.output.splitlines() if ln.strip()][-1:] or [""]
            shard.error = f"the shard's farm run exited with {res.returncode}: {last[0]}"
        # whatever the shard gathered comes back, even from a run that ended in an error
        probe = ssh.run(["test", "-f", remote_results / "results.json"], check=False)
        if probe.returncode:
            shard.error = shard.error or "the shard left no results.json"
            return
        tarball = top / "results" / f"{name}.tar.gz"
        ssh.run(["tar", "-czf", tarball, "-C", top / "results", name], log_path=log)
        local.mkdir(parents=True, exist_ok=True)
        ssh.get(tarball, local / f"{name}.tar.gz")
        extract(local / f"{name}.tar.gz", local, name, host.ssh)
        (local / f"{name}.tar.gz").unlink()
        shard.result = local / name
    except FarmError as e:
        shard.error = str(e)
    finally:
        if ssh:
            ssh.close()


def extract(archive: Path, dest: Path, top: str, host: str) -> None:
    """A host's result archive unpacked here, trusting nothing in it: every member must be a
    plain file or directory under top/ (no absolute path, no .., no link, no device), and
    tarfile's data filter stands behind that check."""
    try:
        with tarfile.open(archive) as tar:
            for m in tar.getmembers():
                parts = PurePosixPath(m.name).parts
                if (m.name.startswith("/") or ".." in parts or not parts or parts[0] != top
                        or not (m.isfile() or m.isdir())):
                    raise InfraError(f"{host}: the result archive holds {m.name!r} "
                                     f"({'a link' if m.issym() or m.islnk() else 'not a file'} "
                                     f"or outside {top}/): refused, nothing was unpacked")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise InfraError(f"{host}: the result archive cannot be unpacked: {e}") from None


def run_on_hosts(cfg: FarmConfig, opts: RunOptions, progress: Progress) -> int:
    """`farm run` with `hosts:` in farm.yaml: one shard per host, merged here. The matrix
    options go to each host's `farm run` as they were given, so every host cuts the same
    matrix into the same shards; they are checked here first, before anything is copied."""
    if opts.shard:
        raise UserError("--shard is for one machine's part of a run; with hosts: in "
                        "farm.yaml the farm shards by itself (or use --local)")
    m = Matrix.of(cfg, opts)
    for k in range(1, len(cfg.hosts) + 1):
        shard_of(m.every, (k, len(cfg.hosts)))
    started = datetime.now(UTC)
    run_id, results, lock = results_for(opts.results, cfg.path.parent / "results", started)
    handler = log_commands(results)
    try:
        return _run_pool(cfg, opts, m, results, run_id, progress, started)
    finally:
        stop_logging(handler)
        lock.release()


def _run_pool(cfg: FarmConfig, opts: RunOptions, m: Matrix, results: Path, run_id: str,
              progress: Progress, started: datetime) -> int:
    shards_dir = results / "shards"
    shards_dir.mkdir(exist_ok=True)
    t0 = time.monotonic()
    pack = shards_dir / "farm.tar"
    cfg_in_pack = _pack(cfg, pack, Runner())
    hosts = cfg.hosts
    shards = [_Shard(h, k, len(hosts)) for k, h in enumerate(hosts, 1)]
    progress.say(f"results: {results}; {len(hosts)} hosts, one shard each")
    args = host_args(opts, m.seed)
    threads = [threading.Thread(
        target=_run_shard, args=(s, cfg_in_pack, pack, args, opts.jobs, run_id, shards_dir,
                                 progress, shards_dir / f"host-{s.index}.log"), daemon=True)
        for s in shards]
    interrupted = None
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except KeyboardInterrupt as e:
        interrupted = getattr(e, "how", "Ctrl-C")
        with deferred_signals():
            progress.say(f"interrupted ({interrupted}): stopping the hosts' runs")
            for s in shards:  # the hosts' terminals hang up: their farms stop as on Ctrl-C
                if s.ssh:
                    s.ssh.close()
            for t in threads:
                t.join(timeout=30)
    for s in shards:
        if interrupted and not s.result:
            s.error = f"the run was interrupted ({interrupted})"
        if s.error:
            progress.say(f"{s.label}: {s.error.splitlines()[0]} "
                         f"(log {shards_dir / f'host-{s.index}.log'})")
    why = {s.index: f"not run: host {s.host.ssh}: "
                    + s.error.splitlines()[0].removeprefix(f"{s.host.ssh}: ")
           for s in shards if not s.result and s.error}
    got = [s.result for s in shards if s.result]
    with deferred_signals():
        if got:
            code = merge_dirs(got, results, absent_why=why, held=True, interrupted=interrupted)
        else:
            code = _nothing_came_back(cfg, m, results, run_id, started, why, interrupted)
    progress.say(f"done in {fmt_seconds(time.monotonic() - t0)}: {results}")
    return code


def _nothing_came_back(cfg: FarmConfig, m: Matrix, results: Path, run_id: str,
                       started: datetime, why: dict[int, str], interrupted: str | None) -> int:
    """No host returned a result: the whole matrix is reported, every case an error that
    names its host and why, so CI shows what happened rather than nothing."""
    n = len(cfg.hosts)
    plan = [entry for k in range(1, n + 1)
            for entry in skeleton(m.variants, shard_of(m.every, (k, n)), m.repeat,
                                  m.kernels, not_run=why.get(k, "not run"))]
    meta = replace(run_meta(cfg, m, run_id, started), hosts=[h.ssh for h in cfg.hosts],
                   seconds=0.0, interrupted=interrupted or False)
    write_json(results / "plan.json", plan_json(plan))
    write_run_json(results, meta, variant_docs(cfg, m))
    return report_dir(results)
