"""Rendering a CnncError the way the command line prints it: `FILE:LINE:COL: error:
MESSAGE`, the source line and a caret, with everything from the user escaped.

Apart from `errors` because it reads source lines with the front end's safe reader, and
the front end raises those errors.
"""

from __future__ import annotations

import unicodedata

from .errors import CnncError
from .frontend import read_source, source_lines


def printable(text: str, keep: str = "") -> str:
    """`text` with control and format characters escaped (`\\x1b`, `\\u202e`), so a file
    name, a message or a source line shown on a terminal can never drive it."""
    return "".join(c if c in keep or unicodedata.category(c) not in _UNPRINTABLE else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text)


_UNPRINTABLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls, bidi and other format marks, separators
_EXCERPT = 120  # characters of a long source line shown around the caret


def _excerpt(line: str, column: int) -> tuple[str, int]:
    """The source line as shown (tabs as one space, escaped, long lines cut around
    `column`) and the offset of the caret in it."""
    at = max(column, 1) - 1
    start = max(0, min(at - _EXCERPT // 2, len(line) - _EXCERPT))
    end = start + _EXCERPT
    head = "..." if start > 0 else ""
    tail = "..." if end < len(line) else ""

    def show(part: str) -> str:
        return printable(part.replace("\t", " "))

    return head + show(line[start:end]) + tail, len(head) + len(show(line[start:at]))


def _source_line(err: CnncError) -> str | None:
    if err.source_line is not None or not err.file:
        return err.source_line
    try:  # read as safely as a source is (regular files, bounded, text only)
        lines = source_lines(read_source(err.file))
    except CnncError:
        return None
    return lines[err.line - 1] if 0 < err.line <= len(lines) else None


def format_error(err: CnncError) -> str:
    """Render an error for the terminal, with the source line and a caret."""
    message = printable(err.message, keep="\n")
    file = printable(err.file) if err.file else None
    if err.line is None:
        where = f"{file}: " if file else ""
        return f"{where}error: {message}"
    head = f"{file or '<source>'}:{err.line}:{err.column}: error: {message}"
    src = _source_line(err)
    if src is None:
        return head
    shown, caret = _excerpt(src, err.column)
    return f"{head}\n    {shown}\n    {' ' * caret}^"
