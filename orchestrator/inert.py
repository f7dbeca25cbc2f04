"""Text the farm did not write (a guest's console and agent, a patch, farm.yaml, a case file)
made inert wherever the farm shows it: on a terminal no control character acts (no ANSI or
OSC escape clears the screen or sets a title, no bidirectional override reorders a line);
in Markdown no HTML tag starts; in the HTML report a link leads only into the result
directory."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# C0 controls but tab and newline, DEL, C1 controls, and Unicode's bidirectional overrides
# and isolates (which make a terminal or a browser show text in another order than it is)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_TAG = re.compile(r"<(?=[A-Za-z/!?])")


def _escape(m: re.Match) -> str:
    n = ord(m.group())
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def inert(text: str) -> str:
    """text with each control character written as its escape (ESC as \\x1b), visible and
    harmless; tab and newline stay."""
    return _CONTROL.sub(_escape, text)


def markdown(text: str) -> str:
    """inert, and no HTML tag: `<script>` is written `&lt;script>`, which Markdown shows as
    it was."""
    return _TAG.sub("&lt;", inert(text))


def relative_link(path: str | None, roots: tuple[str, ...] = ()) -> str:
    """path when it is a relative path inside the result directory (or, for `farm compare`,
    an absolute path inside one of the compared directories, roots), else '' (no link):
    never a parent directory, another absolute path, or a scheme such as javascript:."""
    if not path or "\\" in path or _CONTROL.search(path):
        return ""
    p = PurePosixPath(path)
    if ".." in p.parts or ":" in p.parts[0]:
        return ""
    if p.is_absolute() and not any(PurePosixPath(r) in p.parents for r in roots):
        return ""
    return path
