"""Reading a YAML file the farm takes from a merge request (farm.yaml, a scenario file):
plain YAML only, with its nodes' line numbers, and the typed checks of its values, each
problem collected as `file:line: message` so that all of them are reported at once."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

# libyaml's parser where PyYAML has it (Debian's and the wheels do): the scenario file's
# nodes in a tenth of the pure-Python parser's time
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

YAML_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq",
                                                 "map", "timestamp")}
# How many values a file may hold once its aliases are expanded: a real farm.yaml or
# scenario file holds a few thousand; an alias bomb holds billions.
MAX_VALUES = 100_000


class Checker:
    """Walks YAML nodes, collecting problems with file and line."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []
        self._construct = yaml.constructor.SafeConstructor()

    def err(self, node: yaml.Node | None, msg: str) -> None:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        self.problems.append(f"{self.path}{line}: {msg}")

    def load(self) -> yaml.Node | None:
        """The file's YAML node tree, or None with the problem recorded: unreadable, not
        UTF-8, not YAML, nested too deep, tagged, or with aliases that expand too far."""
        try:
            raw = self.path.read_bytes()
        except OSError as e:
            self.problems.append(f"{self.path}: cannot read: {e.strerror}")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
            self.problems.append(f"{self.path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} "
                                 f"at column {col})")
            return None
        try:
            root = yaml.compose(text, Loader=LOADER)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            if mark is None and isinstance(getattr(e, "position", None), int):
                where = f":{text.count(chr(10), 0, e.position) + 1}"
            else:
                where = f":{mark.line + 1}" if mark else ""
            why = getattr(e, "problem", None) or str(e).splitlines()[0]
            ctx, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
            if ctx and cmark and mark and cmark.line != mark.line:
                why += f" ({ctx} that starts at line {cmark.line + 1})"
            if "maximum nesting depth" in why:  # libyaml's limit; the pure parser recurses
                self.problems.append(f"{self.path}{where}: nested too deeply")
            else:
                self.problems.append(f"{self.path}{where}: not valid YAML: {why}")
            return None
        except RecursionError:
            self.problems.append(f"{self.path}:{_too_deep(text)}: nested too deeply")
            return None
        if root is None:
            self.problems.append(f"{self.path}: the file is empty")
            return None
        return root if self._vet(root) else None

    def _vet(self, root: yaml.Node) -> bool:
        """Tags and aliases, checked before any value is built: every node must be plain
        YAML, and the tree with its aliases expanded must stay small."""
        size: dict[int, int] = {}
        active: set[int] = set()
        stack: list[tuple[yaml.Node, bool]] = [(root, False)]
        ok = True
        while stack:
            node, done = stack.pop()
            kids = _children(node)
            if done:
                active.discard(id(node))
                size[id(node)] = 1 + sum(size[id(k)] for k in kids)
                if size[id(node)] > MAX_VALUES:
                    self.err(node, f"aliases expand this to more than {MAX_VALUES} values")
                    return False
                continue
            if id(node) in size:
                continue
            if id(node) in active:
                self.err(node, "an alias refers to a value that contains it")
                return False
            if node.tag not in YAML_TAGS:
                what = "a merge key (<<)" if node.tag.endswith(":merge") else f"tag {node.tag}"
                self.err(node, f"{what} is not allowed: plain YAML values only")
                ok = False
            active.add(id(node))
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
        return ok

    def mapping(self, node, what: str, known: dict[str, bool]) -> dict[str, yaml.Node]:
        """known: key -> required. Unknown and missing keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping")
            return {}
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            key = scalar(k)
            if key is None:
                self.err(k, f"{what}: a key must be a plain word, not a list or mapping")
            elif key in out:
                self.err(k, f"{what}: duplicate key '{key}'")
            elif key not in known:
                self.err(k, f"{what}: unknown key '{key}' (known: {', '.join(known)})")
            else:
                out[key] = v
        for key, required in known.items():
            if required and key not in out:
                self.err(node, f"{what}: missing key '{key}'")
        return out

    def value(self, node, what: str, types: tuple[type, ...]):
        """The Python value of a node, or None with a problem if it has the wrong type."""
        try:
            val = self._construct.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            self.err(node, f"{what}: not a value the farm can read: {str(e).splitlines()[0]}")
            return None
        if isinstance(val, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(val, types)
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            self.err(node, f"{what} must be {names}, not {_yaml_type(val)} {val!r}")
            return None
        return val

    def choice(self, node, what: str, choices: tuple[str, ...]) -> str | None:
        val = self.value(node, what, (str,))
        if val is not None and val not in choices:
            self.err(node, f"{what} is '{val}', expected one of: {', '.join(choices)}")
            return None
        return val

    def positive(self, node, what: str) -> int | None:
        return self.bounded(node, what, 1, None)

    def bounded(self, node, what: str, low: int, high: int | None) -> int | None:
        val = self.value(node, what, (int,))
        if val is not None and (val < low or high is not None and val > high):
            self.err(node, f"{what} must be " + (f"{low} to {high}" if high is not None
                                                 else f"at least {low}") + f", not {val}")
            return None
        return val

    def file(self, node, what: str, base: Path, kind: str = "file") -> Path | None:
        val = self.value(node, what, (str,))
        if val is None:
            return None
        p = (base / os.path.expanduser(val)).resolve()
        exists = p.is_dir() if kind == "dir" else p.is_file()
        if not exists:
            self.err(node, f"{what}: no such {kind}: {p}")
            return None
        return p

    def files(self, node, what: str, base: Path) -> tuple[Path, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, f"{what} must be a list of paths")
            return ()
        out = [self.file(n, f"{what}[{i}]", base) for i, n in enumerate(node.value)]
        return tuple(p for p in out if p)

    def named(self, node, what: str, noun: str, like: str, pattern: re.Pattern,
              why: str) -> Iterator[tuple[yaml.Node, str, yaml.Node]]:
        """The entries of a mapping of names (variants, layers): (key node, name, value
        node) for each whose name is a plain word matching pattern and not given twice.
        noun: what one entry is; like: what the mapping must look like; why: what the
        names are used for."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping of {like}")
            return
        seen: set[str] = set()
        for k, v in node.value:
            name = scalar(k)
            if name is None:
                self.err(k, f"a {noun}'s name must be a plain word, not a list or mapping")
            elif not pattern.match(name):
                self.err(k, f"{noun} name {name[:60]!r} must match {pattern.pattern} ({why})")
            elif name in seen:
                self.err(k, f"{what}: duplicate {noun} '{name}'")
            else:
                seen.add(name)
                yield k, name, v


def _too_deep(text: str, limit: int = 100) -> int:
    """The line where a document nests deeper than anyone writes by hand (brackets or
    indentation); the YAML parser itself only runs out of stack, with no line."""
    depth = 0
    for n, line in enumerate(text.splitlines(), 1):
        if len(line) - len(line.lstrip(" -")) > 4 * limit:
            return n
        for ch in line:
            depth += (ch in "[{") - (ch in "]}")
            if depth > limit:
                return n
    return 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def scalar(node) -> str | None:
    """A mapping key as text, or None when the key is not a plain value."""
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _yaml_type(val) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", type(None): "null"}
    return names.get(type(val), type(val).__name__)
