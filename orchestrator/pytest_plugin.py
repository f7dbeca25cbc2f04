"""pytest-xdist as the farm's scheduler: each (variant, scenario, repeat) of a plan file is
one test item, so `-n N` runs N guests at once and a worker takes one guest at a time."""

from __future__ import annotations

import json

import pytest

from .case import run_case


def pytest_addoption(parser):
    parser.addoption("--farm-plan", help="the plan.json of a farm run")


def pytest_collect_file(file_path, parent):
    plan = parent.config.getoption("farm_plan")
    if plan and file_path.name == "plan.json" and str(file_path) == plan:
        return PlanFile.from_parent(parent, path=file_path)
    return None


class CaseProblem(Exception):
    """A case that did not pass; its message is what the user needs, not a traceback."""


class PlanFile(pytest.File):
    def collect(self):
        for spec in json.loads(self.path.read_text())["cases"]:
            yield CaseItem.from_parent(self, name=spec["id"], spec=spec)


class CaseItem(pytest.Item):
    def __init__(self, *, spec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self):
        record = run_case(self.spec)
        status, message = record["status"], record["message"]
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
