"""The typer application object and the helpers every command module shares."""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from cfrec._io import to_jsonable

app = typer.Typer(
    name="cfrec",
    help="cfrec: collaborative filtering on MovieLens and any rating file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
#: The arguments of the running command line (set by :func:`cfrec.cli.main`).
command_line: ContextVar[list[str] | None] = ContextVar("command_line", default=None)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from cfrec._version import __version__

        typer.echo(f"cfrec {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """cfrec: collaborative filtering on MovieLens and any rating file."""


def say(message: str, *, stderr: bool = False, style: str | None = None) -> None:
    """Print one plain line (no markup, no highlighting) to stdout or stderr."""
    (err_console if stderr else console).print(message, style=style, highlight=False, soft_wrap=True,
                                               markup=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit non-zero (no traceback)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_model(path: Path) -> Any:
    """The saved model in ``path`` (whatever its class)."""
    from cfrec.models.base import Recommender

    return Recommender.load(path)


def echo_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON (NaN refused) on stdout."""
    typer.echo(json.dumps(to_jsonable(obj), indent=2, allow_nan=False))


def epoch_printer(to_err: bool) -> Any:
    """The ``on_epoch`` callback that prints one line an epoch."""
    def on_epoch(rec: dict[str, Any]) -> None:
        total = rec.get("epochs", "?")
        line = f"  epoch {rec['epoch']:>3}/{total}  train_loss {rec['train_loss']:.4f}"
        if rec.get("valid_rmse") is not None:
            line += f"  valid_rmse {rec['valid_rmse']:.4f}"
        say(line + f"  ({rec.get('seconds', 0.0):.1f} s)", stderr=to_err)

    return on_epoch
