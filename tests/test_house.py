"""The house stays one a newcomer can find their way in (docs/internals.md): no import cycle
in the package, no module over 400 lines, no function over 60 (the guest's C workload's
included), and the map of stages to files names every module once."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).parent.parent
PACKAGE = REPO / "orchestrator"
WORKLOAD = REPO / "guest-tests" / "workloads" / "hwpoison-case.c"
MAX_MODULE, MAX_FUNCTION = 400, 60


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.glob("*.py"))}


def imports(tree: ast.Module) -> set[str]:
    """The package's modules a module imports, wherever the import stands (a function's
    own import counts: a cycle through it is a cycle all the same)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def test_the_package_has_no_import_cycle():
    graph = {name: imports(tree) - {"__init__"} for name, tree in modules().items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_no_module_is_over_400_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert {n: s for n, s in sizes.items() if s > MAX_MODULE} == {}


def test_no_python_function_is_over_60_lines():
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    long.append(f"{name}.{node.name}: {n}")
    for p in (REPO / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    long.append(f"benchmarks/{p.name}:{node.name}: {n}")
    assert long == []


def c_functions(text: str) -> dict[str, int]:
    """A C file's functions (a definition starts at column 0 and ends at a '}' alone at
    column 0) and their lengths in lines."""
    out, name, start = {}, None, 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(?:static |int |void |const |unsigned |long |double |uint64_t |char )"
                     r"[^;=]*?\b(\w+)\(", line)
        if name is None and m and not line.rstrip().endswith(";"):
            name, start = m.group(1), i
        elif name is not None and line == "}":
            out[name] = i - start + 1
            name = None
    return out


def test_no_function_of_the_workload_is_over_60_lines():
    funcs = c_functions(WORKLOAD.read_text())
    assert {"main", "race_main", "setup", "run_step"} <= set(funcs)
    assert {f: n for f, n in funcs.items() if n > MAX_FUNCTION} == {}


def test_the_map_of_stages_names_every_module():
    text = (REPO / "docs" / "internals.md").read_text()
    named = set(re.findall(r"`orchestrator/(\w+)\.py`", text))
    assert named == {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
