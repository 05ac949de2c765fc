"""Command-line interface (a thin layer: parse arguments, call the library, print)."""

from __future__ import annotations

import logging
import os
import sys

from rich.markup import escape

from cfrec._io import is_os_failure, os_error_reason
from cfrec.cli._app import app, command_line, err_console
from cfrec.errors import CfrecError

# Command modules register themselves on `app` when imported.
from cfrec.cli import data as _data  # noqa: E402,F401  isort: skip
from cfrec.cli import models as _models  # noqa: E402,F401  isort: skip
from cfrec.cli import query as _query  # noqa: E402,F401  isort: skip
from cfrec.cli import evaluate as _evaluate  # noqa: E402,F401  isort: skip
from cfrec.cli import report as _report  # noqa: E402,F401  isort: skip
from cfrec.cli import tune as _tune  # noqa: E402,F401  isort: skip
from cfrec.cli import serve as _serve  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]


def _rank_prefix() -> str:
    """``"rank R: "`` in a process of a multi-process job (torchrun), else empty."""
    world, rank = os.environ.get("WORLD_SIZE", ""), os.environ.get("RANK", "")
    return f"rank {rank}: " if world not in ("", "0", "1") and rank and not rank.isspace() else ""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cfrec`` script: user errors become one line on stderr and exit code 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # the command line as given: `train --nproc N` starts N copies of it
        command_line.set(list(sys.argv[1:] if argv is None else argv))
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 1
    except CfrecError as exc:
        message = exc.render("cli")
        if not message.startswith("rank "):
            message = _rank_prefix() + message
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return 1
    except Exception as exc:  # a failure of the system (disk full, permission ...) in any command
        if not is_os_failure(exc):
            raise
        line = _rank_prefix() + _os_failure_line(exc)
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


def _os_failure_line(exc: BaseException) -> str:
    """``"FILE: REASON"`` for an OS failure no command turned into a sentence of its own."""
    _, reason = os_error_reason(exc)
    names = [getattr(exc, attr, None) for attr in ("filename", "filename2")]
    where = " -> ".join(str(n) for n in names if n)
    return f"{where}: {reason}" if where else reason


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
