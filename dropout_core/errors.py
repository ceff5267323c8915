"""The library's one error type."""

from __future__ import annotations

import errno


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

    Plain names come back as they are; anything else is quoted and escaped.

    >>> escape_name("x.npy")
    'x.npy'
    >>> print(escape_name("a\\x1b[2Jb"))
    'a\\x1b[2Jb'
    """
    if name and name.isprintable() and not (set(name) & set(" '\"\\")):
        return name
    out = []
    for ch in name:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch != " " and not ch.isprintable():  # controls, surrogates, bidi overrides
            out.append(f"\\x{o:02x}" if o < 0x100 else
                       f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "'" + "".join(out).replace("'", "\\'") + "'"


def os_reason(exc: OSError) -> str:
    """An OSError in a few words: the reason, without errno numbers or paths."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EFBIG:
        return "file too large"
    return exc.strerror or str(exc)


def where(file: str, tensor: str) -> str:
    """'file: tensor NAME' for messages about an array or a file's tensor ('array' unnamed)."""
    return (escape_name(file) if file else "array") + (f": tensor {escape_name(tensor)}"
                                                       if tensor else "")
