"""Errors that say whose fault it is; the CLI maps them onto exit codes."""


class FarmError(Exception):
    """Base of the farm's own errors."""

    exit_code = 3


class UserError(FarmError):
    """Bad input: farm.yaml, a scenario file, a patch, command-line arguments (exit 2)."""

    exit_code = 2


class InfraError(FarmError):
    """The farm could not get an answer: a tool is missing, QEMU or make broke (exit 3)."""

    exit_code = 3


class ConfigErrors(UserError):
    """Every problem found in one input file, each with its file and line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
