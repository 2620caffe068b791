"""Text as a terminal may show it: what records say can come from outside (alert labels, a proxy's
error page), and a control character in it (an escape sequence, a carriage return, a bidirectional
override) must be shown, not acted on. Pure."""

from __future__ import annotations


def printable(text: str, keep: str = "") -> str:
    """``text`` with each character that is not printable, but those in ``keep``, written as its
    escape sequence: ``\\n``, ``\\r``, ``\\t``, ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else _escaped(c) for c in text)


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def shown(text: str) -> str:
    """Text printed to a terminal: its lines and tabs kept, every other control character escaped."""
    return printable(text, keep="\n\t")
