"""The `segqa` command line (ARCHITECTURE §13).

Each command group lives in its own module and registers itself on the app; commands are thin: they parse
options, call a library function, and print. Heavy libraries (mxnet, pandas, boto3) are imported inside the
commands so that `segqa --help` stays fast. All output goes through `qa_workflow.cli.console` (consoles,
progress bars that fall back to plain log lines when not on a terminal, training bars, reject summaries).

User mistakes raise `SegqaError` and are printed as one line with a non-zero exit; so are OS errors (a path that
cannot be written or read: read-only, a folder where a file goes, a file where a folder goes) and botocore's
(no region, no credentials, access denied). `--debug` shows the traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

from training.threads import configure_threads

configure_threads()  # before any command imports mxnet: it sizes its OpenMP pool once, at load

import typer

from qa_workflow import __version__
from qa_workflow.cli import analyze, cloud, data, loop, model, review, rounds, store
from qa_workflow.cli.console import NotBuilt
from qa_workflow.contract import SegqaError

app = typer.Typer(
    name="segqa",
    help="Label QA and active learning around a brain-tissue MRI segmenter (U-Net / ENet, MXNet).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segqa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


for _module in (data, model, rounds, review, store, analyze, loop, cloud):
    _module.register(app)


def _click_exceptions():
    """(ClickException, Exit, Abort) of the click that typer really uses: typer >= 0.29 vendors its own copy
    of click's exceptions (typer._click) and has its own Exit/Abort; older typers use the click package."""
    try:
        exceptions = importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - older typer
        exceptions = importlib.import_module("click.exceptions")
    return exceptions.ClickException, typer.Exit, typer.Abort


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: the path it names (a rename's destination: the source is our temporary file)
    and what went wrong, e.g. ``out.csv: is a folder, expected a file``; ``--debug`` shows where it happened."""
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = {IsADirectoryError: "is a folder, expected a file",
              NotADirectoryError: "expected a folder, but a file is in the way (this path or one above it)",
              FileExistsError: "already exists, and is not a folder this command can use"}.get(
        type(exc), exc.strerror or str(exc) or type(exc).__name__)
    return f"{path}: {reason}" if path is not None else reason


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: runs the app, turning user errors into one line on stderr."""
    click_error, click_exit, click_abort = _click_exceptions()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rc = app(args=argv, prog_name="segqa", standalone_mode=False)
    except SegqaError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except NotBuilt as exc:
        typer.echo(f"segqa: {exc}", err=True)
        return 3
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except OSError as exc:  # a path given that cannot be written or read (read-only, a folder for a file, ...)
        if debug:
            raise
        typer.echo(f"error: {os_error_line(exc)}", err=True)
        return 2
    except click_error as exc:  # usage mistakes: click formats them (usage line + one error line)
        exc.show()
        return exc.exit_code
    except click_exit as exc:
        return exc.exit_code
    except click_abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as exc:
        if debug or not type(exc).__module__.startswith("botocore."):
            raise
        typer.echo(f"error: AWS: {exc}", err=True)  # no region or credentials, access denied, ...
        return 2
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
