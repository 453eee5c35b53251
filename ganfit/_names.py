"""Names and strings that end up in line-based file formats (OBJ, MTL, PLY headers) or in one-line messages.

A file name may hold any character but "/" and NUL: newlines, tabs, terminal escape sequences, bidi
overrides, bytes that are not UTF-8 (which Python decodes to lone surrogates). Written verbatim into an OBJ,
a newline in a name adds lines (an injected ``mtllib``, extra ``v`` lines that shift every face index);
printed verbatim, it splits a one-line error message or drives the terminal. So:

- `escape_controls` makes any text safe on one line (for comments and messages): unsafe characters become
  ``\\xNN`` / ``\\uNNNN`` escapes;
- `check_name` refuses a name that a file format would store verbatim (``mtllib``, ``map_Kd``, ...);
- `safe_stem` turns an input's name into an output name: no unsafe characters, no whitespace, no path
  separators, never empty, ``.`` or ``..``, not hidden, and short enough for any file system.
"""
from __future__ import annotations

import unicodedata

from .errors import OutputError

#: Unicode categories never written verbatim: controls (newline, tab, ESC, DEL, C1), format characters
#: (bidi overrides, zero-width), line and paragraph separators, surrogates (undecodable bytes of a file
#: name), private use and unassigned.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

#: Longest output stem in UTF-8 bytes: leaves room for "_overlay.png" and a temporary name's prefix and
#: suffix within the 255 bytes most file systems allow.
MAX_STEM_BYTES = 160


def is_unsafe(char: str) -> bool:
    """Whether `char` must not be written verbatim into a line-based format or a one-line message."""
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def has_unsafe(text: str) -> bool:
    """Whether `text` holds any character `is_unsafe` rejects."""
    return any(is_unsafe(c) for c in text)


def escape_controls(text: object) -> str:
    """`str(text)` with every unsafe character written as an escape (``\\n``, ``\\x1b``, ``\\u202e``; an
    undecodable file-name byte as ``\\xNN``): the result is one line of printable text."""
    out = []
    for c in str(text):
        if not is_unsafe(c):
            out.append(c)
        elif c in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(f"\\u{ord(c):04x}")
    return "".join(out)


def check_name(name: str, what: str) -> str:
    """Return `name` if a line-based format can store it verbatim; raise `OutputError` otherwise.

    Refused: empty names, line breaks and other unsafe characters (spaces are allowed: OBJ readers take the
    rest of the line as the file name).
    """
    if not name or not name.strip():
        raise OutputError(f"cannot write {what}: the name is empty")
    if has_unsafe(name):
        raise OutputError(
            f"cannot write {what} {escape_controls(name)!r}: the name holds a newline or another control "
            "character that would corrupt the file; choose a name without them")
    return name


def safe_stem(name: str | None, fallback: str) -> str:
    """An output file stem derived from an input's `name` (e.g. a photo's stem).

    Unsafe characters, whitespace and path separators become ``_``; leading dots and trailing dots or
    underscores are dropped (no hidden files, never ``.`` or ``..``); the result is cut to
    `MAX_STEM_BYTES` of UTF-8. Returns `fallback` when nothing is left.
    """
    if not name:
        return fallback
    chars = ["_" if is_unsafe(c) or c.isspace() or c in "/\\" else c for c in name]
    stem = "".join(chars).lstrip(".").rstrip("._")
    encoded = stem.encode("utf-8")
    if len(encoded) > MAX_STEM_BYTES:
        stem = encoded[:MAX_STEM_BYTES].decode("utf-8", errors="ignore").rstrip("._")
    return stem or fallback
