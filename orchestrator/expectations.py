"""What a scenario expects: its observables by name (a step's own as <step>.<observable>, a
race's as race.<observable>), each of the type and the values it may take, and what kernels
older than a release expect instead (`before:`), checked with their lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .registry import ALLOWED, OBSERVABLES, RACE_OBSERVABLES, STEP_OBSERVABLES, own_steps
from .versions import VERSION_RE
from .versions import key as version_key
from .yamlcheck import Checker, scalar


@dataclass(frozen=True)
class Older:
    """What a scenario expects of kernels older than a release, where they differ from its
    own `expect` (which is the newest kernels'): the observables that differ, and the why,
    naming the function of those kernels that decides it."""
    before: str  # '6.12': kernels older than 6.12
    why: str
    expect: dict[str, Any] = field(default_factory=dict)


def older_of(c: Checker, node, label: str, access: str | None,
           racing: bool) -> tuple[Older, ...]:
    """`before`: release -> {why, expect}: what kernels older than that release expect
    where they differ, each with the why of its own kernels."""
    if not isinstance(node, yaml.MappingNode) or not node.value:
        c.err(node, f"{label}: before must map a release to what older kernels do, e.g. "
                    "'6.12': {why: ..., expect: {...}}")
        return ()
    out: list[Older] = []
    for knode, vnode in node.value:
        release = scalar(knode)
        if release is None or not VERSION_RE.match(release):
            c.err(knode, f"{label}: before: {str(release)[:40]!r} is not a kernel release "
                         "(like 6.12 or 6.1.50)")
            continue
        if any(version_key(o.before) == version_key(release) for o in out):
            c.err(knode, f"{label}: before: {release} is listed twice")
            continue
        what = f"{label}: before {release}"
        f = c.mapping(vnode, what, {"why": True, "expect": True})
        why = c.value(f["why"], f"{what}: why", (str,)) if "why" in f else None
        expect = expect_of(c, f["expect"], what, access, racing) if "expect" in f else {}
        if why and expect:
            out.append(Older(release, why, expect))
        elif why:
            c.err(vnode, f"{what}: expect names no observable that differs")
    return tuple(out)


def expect_of(c: Checker, node, label: str, access: str | None,
            racing: bool = False) -> dict[str, Any]:
    """`expect`: observables by name; a step's own are <step>.<observable> (pread.errno), a
    race's race.<observable>."""
    if not isinstance(node, yaml.MappingNode):
        c.err(node, f"{label}: expect must be a mapping")
        return {}
    expect: dict[str, Any] = {}
    for knode, vnode in node.value:
        key = scalar(knode)
        if key is None:
            c.err(knode, f"{label}: expect: a key must be a plain word")
            continue
        if key in expect:
            c.err(knode, f"{label}: expect: duplicate key '{key}'")
            continue
        typed = _race_key(c, knode, key, label) if racing else \
            _observable_key(c, knode, key, label, access)
        if typed is None:
            continue
        types, kind = typed
        val = c.value(vnode, f"{label}: expect.{key}", types)
        allowed = ALLOWED.get(kind)
        if allowed and val is not None and val not in allowed:
            c.err(vnode, f"{label}: expect.{key} is '{val}', expected one of: "
                         f"{', '.join(allowed)}")
        expect[key] = val
    return expect


def _race_key(c: Checker, knode, key: str, label: str) -> tuple[tuple[type, ...], str] | None:
    """What a race scenario may expect: guest, kernel_errors and race.<observable>."""
    step, _, obs = key.partition(".")
    if key not in ("guest", "kernel_errors") and (step != "race" or obs not in RACE_OBSERVABLES):
        c.err(knode, f"{label}: expect: a race scenario observes guest, kernel_errors "
                     f"and race.<{'|'.join(RACE_OBSERVABLES)}>, not '{key}'")
        return None
    return (OBSERVABLES[key] if key in OBSERVABLES else (int,)), key


def _observable_key(c: Checker, knode, key: str, label: str,
                    access: str | None) -> tuple[tuple[type, ...], str] | None:
    """An observable of a page scenario, or <step>.<observable> of one of its own steps:
    the YAML types its value may take, and which observable it is."""
    if "." not in key:
        if key in OBSERVABLES:
            return OBSERVABLES[key], key
        c.err(knode, f"{label}: expect: unknown observable '{key}' (known: "
                     f"{', '.join(OBSERVABLES)}, and <step>.<{'|'.join(STEP_OBSERVABLES)}> "
                     "for a step of the access)")
        return None
    steps = access.split(",") if access else []
    own = own_steps(steps)
    step, _, obs = key.partition(".")
    if access is not None and step not in own:
        c.err(knode, f"{label}: expect.{key}: '{step}' is not a step of this scenario's "
                     "access with observables of its own" + (f" ({', '.join(own)})" if own
                                                             else "")
                     + ("; a first read/write step reports access_signal and data"
                        if steps and step == steps[0] else ""))
        return None
    if obs not in STEP_OBSERVABLES:
        c.err(knode, f"{label}: expect.{key}: a step's observables are "
                     f"{', '.join(STEP_OBSERVABLES)}")
        return None
    return STEP_OBSERVABLES[obs], obs
