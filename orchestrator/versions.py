"""Kernel versions: read from a tree's own top Makefile (VERSION, PATCHLEVEL, SUBLEVEL,
EXTRAVERSION), never guessed, and compared as numbers, so that a scenario's expectation can
say which kernels it holds for ('6.1.192' is before '6.12')."""

from __future__ import annotations

import re

VERSION_RE = re.compile(r"^\d{1,3}\.\d{1,3}(\.\d{1,4})?$")  # what a scenario may name: 6.12
_FIELD = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)[ \t]*=[ \t]*(\S*)[ \t]*$",
                    re.M)
_EXTRA_RE = re.compile(r"^[A-Za-z0-9_.+~-]{0,32}$")


def version_of_makefile(text: str) -> str | None:
    """'6.12.118' (and any EXTRAVERSION, '-rc3') from a kernel tree's top Makefile, or None
    when the text is not one."""
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(text[:4096]):
        fields.setdefault(key, value)
    if not all(fields.get(k, "").isdigit() for k in ("VERSION", "PATCHLEVEL")):
        return None
    sub = fields.get("SUBLEVEL", "0")
    extra = fields.get("EXTRAVERSION", "")
    if not sub.isdigit() or not _EXTRA_RE.match(extra):
        return None
    return f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{sub}{extra}"


def key(version: str) -> tuple[int, int, int]:
    """The numbers of a version for comparing: '6.1.192' -> (6, 1, 192), '6.12' ->
    (6, 12, 0), '7.0.0-rc3' -> (7, 0, 0) (a release candidate counts as its release)."""
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        raise ValueError(f"not a kernel version: {version!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def before(version: str, boundary: str) -> bool:
    """Whether a kernel of `version` is older than `boundary` ('6.1.192' before '6.12')."""
    return key(version) < key(boundary)


def short(version: str) -> str:
    """'6.12.118' -> '6.12': the release a version belongs to, as tables name it."""
    a, b, _ = key(version)
    return f"{a}.{b}"


# In a why, 'truncate_error_folio [before 6.12: truncate_error_page]': the name a kernel older
# than that release has for the same thing.
NOTE_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*) "
                     r"\[before (\d{1,3}\.\d{1,3}(?:\.\d{1,4})?): ([^\]\n]{1,80})\]")


def text_for(text: str, version: str) -> str:
    """A why as a kernel of this version reads it: each 'name [before R: other]' is `other`
    on kernels older than R, `name` on the rest."""
    return NOTE_RE.sub(lambda m: m.group(3) if before(version, m.group(2)) else m.group(1),
                       text)
