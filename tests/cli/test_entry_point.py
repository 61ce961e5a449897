"""The `segqa` entry point itself: version, every command registered, one-line user errors, exit code 2."""

import subprocess
import sys

from qa_workflow import __version__
from qa_workflow.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"segqa {__version__}"


def test_unbuilt_command_says_so_and_fails(capsys, monkeypatch):
    # A command whose implementation has not landed must say so and exit 3, never pretend.
    import typer

    import qa_workflow.cli as cli
    from qa_workflow.cli._common import not_built

    stub = typer.Typer()

    @stub.command("later")
    def later() -> None:
        not_built("segqa later", 99)

    @stub.command("other")
    def other() -> None:
        pass

    monkeypatch.setattr(cli, "app", stub)
    assert main(["later"]) == 3
    assert "'segqa later' is not built yet (tracked in issue #99)" in capsys.readouterr().err


def test_every_architecture_command_is_registered():
    import typer.main

    from qa_workflow.cli import app

    click_app = typer.main.get_command(app)
    names = set(click_app.commands)
    assert {"data", "train", "evaluate", "export", "predict", "select", "batch", "job", "review", "store",
            "analyze", "retrain", "deploy", "demo"} <= names


def test_console_script_user_error_is_one_line(tmp_path):
    # a user mistake: one line on stderr, no traceback, non-zero exit
    proc = subprocess.run([sys.executable, "-m", "qa_workflow", "data", "preview", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "p.png")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


def test_usage_mistakes_are_short_and_exit_2(tmp_path):
    for args in (["data", "synth", "--out", str(tmp_path / "x")],            # missing --subjects
                 ["data", "synth", "--subjects", "abc", "--out", str(tmp_path / "x")],
                 ["no-such-command"]):
        proc = subprocess.run([sys.executable, "-m", "qa_workflow", *args], capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 12
