"""The `farm` command. The only place that prints errors and chooses exit codes:
0 nothing failed or regressed, 1 a failure or regression, 2 bad input, 3 infrastructure."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from . import __version__
from .errors import FarmError, UserError
from .farmfile import load_farm
from .files import os_error
from .inert import inert
from .options import add_options, fail_on, number, options_of
from .progress import Progress, say
from .signals import handle_stop_signals

FARM_YAML = Path("farm.yaml")


def _config(p: argparse.ArgumentParser, help: str = "farm file (default: ./farm.yaml)") -> None:
    p.add_argument("-c", "--config", type=Path, default=FARM_YAML, help=help)


def _branch(p: argparse.ArgumentParser) -> None:
    """A git branch against its base, with no farm.yaml edited (farm.yaml's other settings
    apply): --git ~/linux --commits v6.12..my-fix."""
    p.add_argument("--git", type=Path, metavar="REPO",
                   help="a kernel git repository: its --commits are the variant, their base "
                        "the baseline (farm.yaml's source and variants give way)")
    p.add_argument("--commits", metavar="BASE..BRANCH",
                   help="with --git: the commits of the variant, e.g. v6.12..my-fix")


def _fail_on(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fail-on", type=fail_on, metavar="VERDICTS",
                   help="also exit 1 on these verdicts: changed, flaky (comma-separated; "
                        "a regression always fails)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="farm", description=(
        "A/B test farm for Linux memory-failure (HWPOISON) patches."))
    p.add_argument("--version", action="version", version=f"farm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="build the variants, run every scenario, report")
    _config(r)
    _branch(r)
    add_options(r, "run")
    r.add_argument("--local", action="store_true",
                   help="run here even if farm.yaml lists hosts")
    pl = sub.add_parser("plan", help="print the matrix a run would execute; build nothing")
    _config(pl)
    _branch(pl)
    add_options(pl, "plan")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--steps", action="store_true",
                    help="a table instead: page kind x access step, how many scenarios meet "
                         "the page that way (docs: access steps)")
    v = sub.add_parser("validate", help="check a farm file and its scenarios (and a git "
                                         "variant's commits); build nothing")
    _config(v)
    _branch(v)
    _saved_commands(sub)
    _bisect_command(sub)
    return p


def _saved_commands(sub) -> None:
    """The commands over saved result directories: report, reparse, kcidb, merge, compare."""
    rep = sub.add_parser("report", help="rewrite a result directory's results.json and "
                                        "reports from its case files")
    rep.add_argument("results", type=Path)
    _fail_on(rep)
    rp = sub.add_parser("reparse", help="judge a saved run's cases again from their logs and "
                                        "the current scenario file; rewrite its reports")
    rp.add_argument("results", type=Path, metavar="DIR")
    _config(rp, "farm file whose scenarios judge (default: ./farm.yaml)")
    k = sub.add_parser("kcidb", help="write a saved run's kcidb.json (KCIDB's schema), as "
                                     "every run does (docs: KCIDB)")
    k.add_argument("results", type=Path, metavar="DIR")
    k.add_argument("--origin", default="", help="the lab's KCIDB origin (default: farm.yaml's "
                                                "kcidb.origin, else hwpoison_farm)")
    k.add_argument("--url", default="", help="where DIR is published, for the log links "
                                             "(default: farm.yaml's kcidb.url, else file: URLs)")
    k.add_argument("--out", type=Path, help="where to write it (default: DIR/kcidb.json)")
    mg = sub.add_parser("merge", help="join the result directories of a sharded run")
    mg.add_argument("dirs", type=Path, nargs="+", metavar="DIR")
    mg.add_argument("--out", type=Path, help="the merged result directory (default: "
                                             "results/merge-<time>)")
    cmp = sub.add_parser("compare", help="A/B verdicts between saved result directories")
    cmp.add_argument("dirs", type=Path, nargs="+", metavar="DIR")
    cmp.add_argument("--base", help="the variant the others are compared with (default: the "
                                    "first directory's base)")
    cmp.add_argument("--out", type=Path, help="where the comparison's results.json and "
                                              "reports go (default: results/compare-<time>)")
    _fail_on(cmp)


def _bisect_command(sub) -> None:
    b = sub.add_parser("bisect", help="the first patch of a variant's series that makes each "
                                      "regressed scenario regress")
    _config(b)
    _branch(b)
    b.add_argument("--variant", help="the variant whose patches to bisect (default: the only "
                                     "one beside the base)")
    b.add_argument("--scenarios", help="comma-separated name patterns (default: every scenario "
                                       "that regresses with the whole series)")
    b.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                   help="a result directory: bisect the scenarios that regressed there")
    b.add_argument("--repeat", type=number(1, 20), default=2,
                   help="runs of each scenario at each prefix (default: 2)")
    b.add_argument("-j", "--jobs", type=number(1), help="guests at once (default: CPUs)")
    b.add_argument("--results", type=Path, help="where the bisection goes (default: "
                                                "results/bisect-<id>)")


def main(argv: list[str] | None = None) -> int:
    handle_stop_signals()
    logging.raiseExceptions = False  # a log that cannot be written (a full disk) is no traceback
    args = parser().parse_args(argv)
    try:
        return _command(args)
    except FarmError as e:
        return _failed(e)
    except KeyboardInterrupt as e:
        _stderr(f"farm: interrupted ({getattr(e, 'how', 'Ctrl-C')})")
        return 3
    except OSError as e:  # a full disk, a directory that cannot be written
        return _failed(os_error(e, "farm"))


def _failed(e: FarmError) -> int:
    """One line on stderr that says whose fault it is, and the exit code that goes with it."""
    kind = "error" if isinstance(e, UserError) else "infrastructure error"
    _stderr(f"farm: {kind}: {e}")
    return e.exit_code


def _stderr(text: str) -> None:
    """An error on the terminal: what it quotes (farm.yaml, a patch, a guest) is inert."""
    try:
        print(inert(text), file=sys.stderr, flush=True)
    except OSError:
        pass


def _command(args) -> int:
    if args.command in ("report", "reparse", "kcidb", "compare", "merge"):
        return _saved(args)
    from .gitseries import on_branch, resolve_series
    cfg = load_farm(args.config)
    if args.git or args.commits:
        cfg = on_branch(cfg, args.git, args.commits)
    cfg = resolve_series(cfg)  # a git variant's commits, each a patch of its series
    if args.command == "validate":
        say(f"{cfg.path}: ok: {len(cfg.variants)} variants ({', '.join(cfg.variants)}), "
            f"{len(cfg.scenarios)} scenarios from {cfg.scenarios_path}\n")
        return 0
    if args.command == "bisect":
        from .bisect import command
        return command(cfg, args.variant, args.scenarios, args.from_dir, args.repeat, args.jobs,
                       args.results, Progress())
    from .plan import plan_doc, plan_text, select, steps_table
    from .run import run
    opts = options_of(args, cfg)
    if args.choose_affected:
        from .affected import affected
        opts = affected(cfg, opts, Progress(), measure=run if args.command == "run" else None)
        if opts.names == ():
            say("--affected: no scenario reaches what the patches change: nothing to run\n")
            return 0
    if args.command == "plan":
        if args.steps:
            say(steps_table(select(cfg, opts)[1]))
            return 0
        doc = plan_doc(cfg, opts)
        say((json.dumps(doc, indent=1) if args.json else plan_text(doc).rstrip("\n")) + "\n")
        return 0
    if cfg.hosts and not args.local:
        from .pool import run_on_hosts
        return run_on_hosts(cfg, opts, Progress())
    return run(cfg, opts, Progress())


def _saved(args) -> int:
    """The commands that read saved result directories and build or boot nothing."""
    from . import saved
    if args.command == "report":
        return saved.report_saved(args.results, args.fail_on)
    if args.command == "reparse":
        from .reparse import reparse_dir
        return reparse_dir(args.results, load_farm(args.config))
    if args.command == "kcidb":
        return saved.kcidb_saved(args.results, args.origin, args.url, args.out)
    out = args.out or Path("results") / datetime.now().strftime(
        f"{args.command}-%Y%m%d-%H%M%S-%f")
    if args.command == "merge":
        return saved.merge_dirs(args.dirs, out)
    return saved.compare_dirs(args.dirs, out, args.base, args.fail_on)


if __name__ == "__main__":
    sys.exit(main())
