"""The library's one error type."""

from __future__ import annotations


class DropoutError(ValueError):
    """Bad data, a bad file or bad parameters.

    ``exit_code`` is 1 for bad data or files and 2 for bad parameters, the
    exit status the command line uses for it.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(DropoutError):
    """A parameter outside its range (exit status 2 on the command line)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


def escape_name(name: str) -> str:
    """Render a tensor or file name so that no control character reaches a terminal.

    >>> escape_name("a\\x1b[2Jb")
    "'a\\\\x1b[2Jb'"
    """
    out = []
    for ch in name:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        elif 0xD800 <= o < 0xE000:  # lone surrogates from undecodable file names
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"
