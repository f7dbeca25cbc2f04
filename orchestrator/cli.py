"""The `farm` command. The only place that prints errors and chooses exit codes:
0 nothing failed or regressed, 1 a failure or regression, 2 bad input, 3 infrastructure."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .config import COVERAGE_DEFAULT, TIERS, coverage_files, load_farm
from .errors import FarmError, UserError
from .files import os_error
from .progress import Progress
from .results import FAIL_ON
from .runner import handle_stop_signals
from .saved import report_saved, say


def _number(low: int, high: int | None = None):
    """An argparse type: a whole number from low (to high)."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if n < low or high is not None and n > high:
            raise argparse.ArgumentTypeError(
                f"must be at least {low}: {n}" if high is None else f"must be {low} to {high}: {n}")
        return n
    return parse


_positive = _number(1)


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, e.g. 2/4: {text!r}")
    return int(k), int(n)


def _matrix_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variants", help="comma-separated variants (default: all)")
    p.add_argument("--scenarios", help="comma-separated name patterns, e.g. 'anon-*'")
    p.add_argument("--page-kind", help="comma-separated page kinds, e.g. anon,hugetlb-anon")
    p.add_argument("--injector", help="comma-separated injectors, e.g. host-srao,host-srar")
    p.add_argument("--repeat", type=_positive, help="runs of each case (default: 1)")
    p.add_argument("--tier", choices=TIERS,
                   help="default: the scenarios every run covers; race: the race scenarios "
                        "(also run when --scenarios names them); full: all of them "
                        "(default: farm.yaml's tier, else default)")
    p.add_argument("--layer", metavar="NAMES",
                   help="add farm.yaml's config layers (comma-separated, e.g. debug) to every "
                        "variant: a build key of their own (README: layers)")
    p.add_argument("--seed", type=_number(0, 2**32 - 1), metavar="N",
                   help="the race scenarios' seed: rerun a run's races the same way, as far as "
                        "the kernel allows (default: a new one each run, in run.json and the "
                        "summary)")
    p.add_argument("--affected", action="store_true",
                   help="only the scenarios whose coverage on the base reaches what the "
                        "variants' patches change (README: coverage); says why each")
    p.add_argument("--shard", type=_shard, metavar="K/N",
                   help="only the K-th of N parts of the scenarios (e.g. one per CI job); "
                        "`farm merge` joins the parts")


def _coverage(cfg, arg: str | None) -> tuple[str, ...] | None:
    """--coverage alone: farm.yaml's files, else the default ones; with a list: those."""
    if arg is None:
        return None
    return coverage_files(arg) if arg else (cfg.coverage or COVERAGE_DEFAULT)


def _coverage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coverage", nargs="?", const="", metavar="FILES",
                   help="build the profiled files with gcov and report which lines and "
                        "functions each scenario reaches (FILES: comma-separated tree paths; "
                        "default: farm.yaml's coverage, else mm/memory-failure.c,mm/madvise.c)")


def _words(text: str | None) -> tuple[str, ...]:
    return tuple(w for w in (text or "").split(",") if w)


def _fail_on(text: str) -> tuple[str, ...]:
    words = _words(text)
    bad = [w for w in words if w not in FAIL_ON]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown verdict(s) {', '.join(bad)} (known: "
                                         f"{', '.join(FAIL_ON)})")
    return words


def _fail_on_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fail-on", type=_fail_on, metavar="VERDICTS",
                   help="also exit 1 on these verdicts: changed, flaky (comma-separated; "
                        "a regression always fails)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="farm", description=(
        "A/B test farm for Linux memory-failure (HWPOISON) patches."))
    p.add_argument("--version", action="version", version=f"farm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="build the variants, run every scenario, report")
    r.add_argument("-c", "--config", type=Path, default=Path("farm.yaml"),
                   help="farm file (default: ./farm.yaml)")
    r.add_argument("--results", type=Path, help="result directory (default: results/<run-id>)")
    _matrix_args(r)
    r.add_argument("-j", "--jobs", type=_positive, help="guests at once (default: CPUs)")
    r.add_argument("--local", action="store_true",
                   help="run here even if farm.yaml lists hosts")
    _coverage_arg(r)
    r.add_argument("--confirm", type=_number(0, 20), metavar="N",
                   help="runs of base and variant again N more times for every verdict "
                        "other than same before it is final (default: 2; 0: off)")
    _fail_on_arg(r)

    pl = sub.add_parser("plan", help="print the matrix a run would execute; build nothing")
    pl.add_argument("-c", "--config", type=Path, default=Path("farm.yaml"))
    _matrix_args(pl)
    _coverage_arg(pl)
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--steps", action="store_true",
                    help="a table instead: page kind x access step, how many scenarios meet "
                         "the page that way (README: access steps)")

    v = sub.add_parser("validate", help="check a farm file and its scenarios; build nothing")
    v.add_argument("-c", "--config", type=Path, default=Path("farm.yaml"))

    rep = sub.add_parser("report", help="rewrite a result directory's results.json and "
                                        "reports from its case files")
    rep.add_argument("results", type=Path)
    _fail_on_arg(rep)

    b = sub.add_parser("bisect", help="the first patch of a variant's series that makes each "
                                      "regressed scenario regress")
    b.add_argument("-c", "--config", type=Path, default=Path("farm.yaml"))
    b.add_argument("--variant", help="the variant whose patches to bisect (default: the only "
                                     "one beside the base)")
    b.add_argument("--scenarios", help="comma-separated name patterns (default: every scenario "
                                       "that regresses with the whole series)")
    b.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                   help="a result directory: bisect the scenarios that regressed there")
    b.add_argument("--repeat", type=_number(1, 20), default=2,
                   help="runs of each scenario at each prefix (default: 2)")
    b.add_argument("-j", "--jobs", type=_positive, help="guests at once (default: CPUs)")
    b.add_argument("--results", type=Path, help="where the bisection goes (default: "
                                                "results/bisect-<id>)")

    rp = sub.add_parser("reparse", help="judge a saved run's cases again from their logs and "
                                        "the current scenario file; rewrite its reports")
    rp.add_argument("results", type=Path, metavar="DIR")
    rp.add_argument("-c", "--config", type=Path, default=Path("farm.yaml"),
                    help="farm file whose scenarios judge (default: ./farm.yaml)")

    k = sub.add_parser("kcidb", help="write a saved run's kcidb.json (KCIDB's schema), as "
                                     "every run does (README: KCIDB)")
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
    _fail_on_arg(cmp)
    return p


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
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


def _command(args) -> int:
    if args.command == "validate":
        cfg = load_farm(args.config)
        say(f"{cfg.path}: ok: {len(cfg.variants)} variants ({', '.join(cfg.variants)}), "
            f"{len(cfg.scenarios)} scenarios from {cfg.scenarios_path}\n")
        return 0
    if args.command == "report":
        return report_saved(args.results, args.fail_on)
    if args.command == "reparse":
        from .reparse import reparse_dir
        return reparse_dir(args.results, load_farm(args.config))
    if args.command == "kcidb":
        from .saved import kcidb_saved
        return kcidb_saved(args.results, args.origin, args.url, args.out)
    if args.command in ("compare", "merge"):
        from datetime import datetime

        from .saved import compare_dirs, merge_dirs
        out = args.out or Path("results") / datetime.now().strftime(
            f"{args.command}-%Y%m%d-%H%M%S-%f")
        if args.command == "merge":
            return merge_dirs(args.dirs, out)
        return compare_dirs(args.dirs, out, args.base, args.fail_on)
    from .run import RunOptions, plan_doc, plan_text, run, select, steps_table
    cfg = load_farm(args.config)
    if args.command == "bisect":
        from .bisect import command
        return command(cfg, args.variant, args.scenarios, args.from_dir, args.repeat, args.jobs,
                       args.results, Progress())
    opts = RunOptions(results=getattr(args, "results", None), variants=_words(args.variants),
                      scenarios=args.scenarios, page_kinds=_words(args.page_kind),
                      injectors=_words(args.injector), jobs=getattr(args, "jobs", None),
                      repeat=args.repeat, shard=args.shard,
                      confirm=getattr(args, "confirm", None),
                      fail_on=getattr(args, "fail_on", None), tier=args.tier,
                      coverage=_coverage(cfg, getattr(args, "coverage", None)),
                      layers=_words(args.layer) or None, seed=args.seed)
    if args.affected:
        from .run import affected
        opts = affected(cfg, opts, Progress(), measure=args.command == "run")
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


if __name__ == "__main__":
    sys.exit(main())
