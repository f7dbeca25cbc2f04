"""pytest-xdist as the farm's scheduler: each (variant, scenario, repeat) of a plan file is
one test item, so `-n N` runs N guests at once and a worker takes one guest at a time. The
farm drives a pytest session over a plan file (run_cases) and turns its progress lines into
what the user sees; the session loads this module as its plugin (-p orchestrator.scheduler)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from .case import run_case
from .caserecords import parse_case_id, read_plan
from .errors import InfraError
from .progress import Progress
from .runner import Runner
from .signals import die_with_parent

SESSION_PID = "FARM_PYTEST_SESSION"
SOLE_PLUGINS = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"  # the session loads only what -p names


def pytest_addoption(parser):
    parser.addoption("--farm-plan", help="the plan file of a farm run (plan.json, confirm.json)")


def pytest_configure(config):
    """The session's workers die with it, however it ends, and their guests die with them
    (each QEMU is started to die with its worker): a killed farm leaves no guest running."""
    if hasattr(config, "workerinput"):
        parent = os.environ.get(SESSION_PID)
        if parent:
            die_with_parent(int(parent))
    else:
        os.environ[SESSION_PID] = str(os.getpid())


PROGRESS = "##farm "


def _emit(event: dict) -> None:
    """A line for the farm's progress display (read from this session's stdout)."""
    print(PROGRESS + json.dumps(event), flush=True)


def pytest_runtest_logstart(nodeid, location):
    _emit({"event": "start", "id": nodeid.split("::", 1)[-1]})


def pytest_runtest_logreport(report):
    props = dict(report.user_properties)
    if "farm_status" in props:
        if report.when == "call":
            _emit({"event": "done", **props["farm_status"]})
    elif report.failed:  # the farm itself broke inside the worker
        _emit({"event": "done", "id": report.nodeid.split("::", 1)[-1], "status": "error",
               "message": str(report.longrepr).splitlines()[-1][:300], "seconds": 0})


def pytest_collect_file(file_path, parent):
    plan = parent.config.getoption("farm_plan")
    if plan and str(file_path) == plan:
        return PlanFile.from_parent(parent, path=file_path)
    return None


class CaseProblem(Exception):
    """A case that did not pass; its message is what the user needs, not a traceback."""


class PlanFile(pytest.File):
    def collect(self):
        for spec in read_plan(json.loads(self.path.read_text()), str(self.path)):
            if spec.not_run is not None:  # e.g. its variant's kernel did not build
                continue
            yield CaseItem.from_parent(self, name=spec.id, spec=spec)


class CaseItem(pytest.Item):
    def __init__(self, *, spec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self):
        record = run_case(self.spec)
        status, message = record.status, record.message
        self.user_properties.append(("farm_status", {
            "id": record.id, "status": status, "message": message,
            "seconds": record.seconds}))
        if status == "skip":
            pytest.skip(message)
        if status != "pass":
            raise CaseProblem(f"{status}: {message}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CaseProblem):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


class CaseProgress:
    """Turns the case runner's progress lines into what the user sees: one line per finished
    case, and a status line with done, running and failed guests and the time so far."""

    def __init__(self, total: int, progress: Progress, log):
        self.total, self.progress, self.log = total, progress, log
        self.running: set[str] = set()
        self.counts = dict.fromkeys(("pass", "fail", "error", "skip"), 0)

    def line(self, line: str) -> None:
        self.log.write(line + "\n")
        at = line.find(PROGRESS)  # pytest's own progress dots may precede it
        if at < 0:
            return
        try:
            ev = json.loads(line[at + len(PROGRESS):])
        except ValueError:
            return
        if ev.get("event") == "start":
            self.running.add(ev["id"])
        elif ev.get("event") == "done":
            self.running.discard(ev["id"])
            status = ev.get("status", "error")
            self.counts[status] = self.counts.get(status, 0) + 1
            variant, scenario, rep = parse_case_id(ev["id"])
            note = "" if status == "pass" else f": {ev.get('message', '')}"
            self.progress.say(f"{status.upper():5} {variant} / {scenario} {rep} "
                              f"({ev.get('seconds', 0):.1f}s){note}")
        done = sum(self.counts.values())
        self.progress.status(
            f"guests: {done}/{self.total} done, {len(self.running)} running, "
            f"{self.counts['fail']} failed, {self.counts['error']} errors")


def run_cases(results: Path, plan: Path, jobs: int, total: int, runner: Runner,
              progress: Progress) -> None:
    """The planned cases of one plan file that can run, under pytest-xdist: one guest per
    worker at a time (one worker: the session runs them itself). The session runs in a
    process group of its own, which the runner stops as a whole if the farm is interrupted,
    and dies with the farm if it is killed."""
    # Only the plugins the farm uses (the environment's others, hypothesis's for one, cost a
    # session a second and a half), and one guest at a time in the session itself (an xdist
    # worker of its own cost a one-case run about two seconds: benchmarks/bench.py snapshot)
    workers = ["-p", "xdist", "-n", str(min(jobs, total))] if min(jobs, total) > 1 else []
    cmd = [sys.executable, "-m", "pytest", "-p", "orchestrator.scheduler",
           "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", results,
           "--farm-plan", plan, plan, *workers, "-q", "--no-header", "-rfEs"]
    with open(results / "pytest.log", "a") as log:
        res = runner.run(cmd, cwd=results, check=False, env={SOLE_PLUGINS: "1"},
                         on_line=CaseProgress(total, progress, log).line)
    if res.returncode not in (0, 1):
        tail = "\n".join(res.output.splitlines()[-15:])
        raise InfraError(f"the case runner (pytest) exited with {res.returncode}; "
                         f"log: {results / 'pytest.log'}\n{tail}")
