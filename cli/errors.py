"""The one edge where a failure becomes what the user sees: 'Error: ...' and an exit status.

Everything else is click's own standalone handling: it shows a ``ClickException``
and exits with its ``exit_code``, and exits 1 quietly on a closed stdout pipe.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import click

EXIT_CODES = "Exit status: 0 done, 1 bad data or a bad file, 2 bad command line."


class CommandError(click.ClickException):
    """A failure shown as one line, ``Error: ...`` on stderr, with its exit status."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(" ".join(message.splitlines()))  # one line, always
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        with contextlib.suppress(OSError):  # stderr closed too: the exit status still says it
            click.echo(f"Error: {self.message}", err=True)


class ShowHelp(CommandError):
    """Bare ``tensor-dropout``: the help on stderr instead of an error line, exit 2."""

    def __init__(self, ctx: click.Context) -> None:
        super().__init__("no command given", 2)
        self.ctx = ctx

    def show(self, file=None) -> None:
        with contextlib.suppress(OSError):
            click.echo(self.ctx.get_help(), err=True)


def command_error(e: Exception) -> CommandError:
    """The one line a user sees for ``e``, and its exit status (1 data, 2 command line)."""
    if isinstance(e, CommandError):
        return e
    if isinstance(e, click.ClickException):  # parsing: click's message, click's status (2)
        return CommandError(e.format_message(), e.exit_code)
    from dropout_core import DropoutError  # loaded already if it raised one

    if isinstance(e, DropoutError):
        return CommandError(str(e), e.exit_code)
    if isinstance(e, MemoryError):
        return CommandError("out of memory", 1)
    if isinstance(e, OSError):
        from dropout_core.errors import escape_name

        where = f"{escape_name(os.fsdecode(e.filename))}: " if e.filename else ""
        return CommandError(f"{where}{e.strerror or e}", 1)
    return CommandError(f"internal error ({type(e).__name__}: {e}); set TENSOR_DROPOUT_DEBUG=1 "
                        "for details and please report it", 1)


def expected(e: Exception) -> bool:
    """True for the failures of bad input; False for a bug (TENSOR_DROPOUT_DEBUG shows those)."""
    from dropout_core import DropoutError

    return isinstance(e, click.ClickException | DropoutError | MemoryError | OSError)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn whatever escapes into a CommandError, except what click's main itself handles."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, CommandError):
        raise
    except BrokenPipeError:
        # stdout was closed early (| head): click exits 1 quietly; the interpreter's last
        # flush of the real stdout must not print "Exception ignored" either.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise
    except KeyboardInterrupt:
        raise CommandError("interrupted", 130) from None
    except Exception as e:
        if os.environ.get("TENSOR_DROPOUT_DEBUG") and not expected(e):
            raise
        raise command_error(e) from None


class Group(click.Group):
    """A click group whose every failure, the library's included, is one line on stderr."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with one_line_errors():  # the group's own options: --bogus
            return super().make_context(info_name, args, parent, **extra)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            raise ShowHelp(ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        with one_line_errors():  # the command's options, and the command itself
            rv = super().invoke(ctx)
            sys.stdout.flush()  # a closed pipe shows up here, still inside the handling
            return rv
