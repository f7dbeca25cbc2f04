"""What memory failure does differently on two kernels: the bare kernels of a run or of a
`farm compare` (variants without patches, each of another version) held side by side,
scenario by scenario, observable by observable, older to newer. Each kernel is judged by its
own expectations, so both may pass; this is the table of what those expectations, and the
kernels, differ in. Pure: the results document in, rows out."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .results import Results
from .verdicts import by_case, signature
from .versions import key

VERSION = re.compile(r"^\d+\.\d+")


@dataclass(frozen=True)
class KernelChange:
    scenario: str
    observable: str
    older: object
    newer: object


@dataclass(frozen=True)
class KernelPair:
    older: str  # the variant of the older kernel
    newer: str
    older_kernel: str
    newer_kernel: str
    changes: tuple[KernelChange, ...]
    same: int  # scenarios that behave alike on both
    unjudged: tuple[str, ...]  # scenarios one side did not answer (error, skip, not run)

    def groups(self) -> list[tuple[tuple[str, ...], tuple[tuple[str, object, object], ...]]]:
        """The scenarios that differ in exactly the same way, together: (scenarios,
        ((observable, older, newer), ...)), in the order they first appear."""
        by: dict[str, list[KernelChange]] = {}
        for c in self.changes:
            by.setdefault(c.scenario, []).append(c)
        out: dict[str, tuple[tuple, list[str]]] = {}
        for s, cs in by.items():
            diff = tuple((c.observable, c.older, c.newer) for c in cs)
            out.setdefault(repr(diff), (diff, []))[1].append(s)
        return [(tuple(ss), diff) for diff, ss in out.values()]


def bare_kernels(doc: Results) -> list[tuple[str, str]]:
    """(variant, version) of the first variant without patches of each kernel version in the
    run, oldest first: its recorded kernel, else (a run of an older farm) its build's
    release."""
    seen: dict[str, str] = {}
    for v, info in doc.variants.items():
        kernel = info.version()
        if kernel and VERSION.match(kernel) and not info.patches and kernel not in seen.values():
            seen[v] = kernel
    return sorted(seen.items(), key=lambda kv: key(kv[1]))


def kernel_pairs(doc: Results) -> list[KernelPair]:
    """Each bare kernel against the next newer one."""
    kernels = bare_kernels(doc)
    by = by_case(doc.cases)
    scenarios = list(dict.fromkeys(c.scenario for c in doc.cases if "/" not in c.scenario))
    out = []
    for (a, ka), (b, kb) in zip(kernels, kernels[1:], strict=False):
        changes, same, unjudged = [], 0, []
        for s in scenarios:
            ca, cb = by.get((a, s), []), by.get((b, s), [])
            if not ca or not cb:
                continue
            if {ca[0].status, cb[0].status} - {"pass", "fail"}:
                unjudged.append(s)
                continue
            sa, sb = signature(ca[0].observed), signature(cb[0].observed)
            diff = [KernelChange(s, k, sa.get(k), sb.get(k)) for k in {**sa, **sb}
                    if sa.get(k) != sb.get(k)]
            changes += diff
            same += not diff
        out.append(KernelPair(a, b, ka, kb, tuple(changes), same, tuple(unjudged)))
    return out


def changes_markdown(doc: Results) -> list[str]:
    """summary.md's section: a table per pair of kernels, empty when the run has one."""
    out = []
    for p in kernel_pairs(doc):
        out += ["", f"## What memory failure does differently: {p.older_kernel} → "
                    f"{p.newer_kernel}", "",
                f"{p.older} against {p.newer}: {len({c.scenario for c in p.changes})} "
                f"scenario(s) differ, {p.same} behave alike"
                + (f", {len(p.unjudged)} not compared ({', '.join(p.unjudged[:6])}"
                   + (", ..." if len(p.unjudged) > 6 else "") + ": an error or a skip)"
                   if p.unjudged else "") + ".", ""]
        if p.changes:
            out += [f"| scenarios | observable | {p.older_kernel} | {p.newer_kernel} |",
                    "|---|---|---|---|"]
            for scenarios, diff in p.groups():
                names = scenario_list(scenarios)
                out += [f"| {names if i == 0 else ''} | {obs} | {_md(a)} | {_md(b)} |"
                        for i, (obs, a, b) in enumerate(diff)]
    return out


def scenario_list(scenarios: tuple[str, ...]) -> str:
    """'a, b, c (3)': the scenarios of a group, counted when there are several."""
    return ", ".join(scenarios) + (f" ({len(scenarios)})" if len(scenarios) > 1 else "")


def _md(value: object) -> str:
    return repr(value).replace("|", "\\|")
