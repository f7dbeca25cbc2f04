"""pytest-xdist as the farm's scheduler: each (variant, scenario, repeat) of a plan file is
one test item, so `-n N` runs N guests at once and a worker takes one guest at a time."""

from __future__ import annotations

import json
import os

import pytest

from .case import run_case
from .records import read_plan
from .runner import die_with_parent

SESSION_PID = "FARM_PYTEST_SESSION"


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
