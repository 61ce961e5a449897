"""The `segqa` entry point itself: version, every command registered, one-line user errors, exit code 2."""

import subprocess
import sys

import pytest

from qa_workflow import __version__
from qa_workflow.cli import main
from qa_workflow.contract import SegqaError


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"segqa {__version__}"


def test_unbuilt_command_says_so_and_fails(capsys, monkeypatch):
    # A command whose implementation has not landed must say so and exit 3, never pretend.
    import typer

    import qa_workflow.cli as cli
    from qa_workflow.cli.console import not_built

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


def test_unusable_output_paths_are_one_line_errors_naming_the_path(tmp_path, capsys):
    """OS errors from a path the user gave (a folder where a file goes, a file where a folder goes, a file
    inside a file) are one line naming the path, exit 2; with --debug, the traceback."""
    from qa_workflow.confirmations.records import ItemRecord, Vote
    from qa_workflow.confirmations.store import open_store

    folder, afile = tmp_path / "adir", tmp_path / "afile"
    folder.mkdir()
    afile.write_text("x")
    store = tmp_path / "st.db"
    s = open_store(f"sqlite:///{store}")
    item = "sub-001/000/csf"
    s.record_votes([(ItemRecord(item, "csf", 0.5, "r01"), Vote("job-1", item, "w1", "accept"))])
    s.close()
    cases = [(["store", "export", "--store", f"sqlite:///{store}", "--out", str(folder)],
              f"{folder}: is a folder, expected a file"),
             (["data", "synth", "--subjects", "1", "--slices", "2", "--out", str(afile / "c")],
              f"{afile}: already exists, and is not a folder")]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err
    with pytest.raises(FileExistsError):
        main(["--debug", *cases[1][0]])


def test_aws_configuration_errors_are_one_line(capsys, monkeypatch):
    from botocore.exceptions import NoRegionError

    import qa_workflow.cli as cli

    def no_region(*args, **kwargs):
        raise NoRegionError()

    monkeypatch.setattr(cli, "app", no_region)
    assert main(["job", "status"]) == 2
    assert capsys.readouterr().err == "error: AWS: You must specify a region.\n"
    monkeypatch.setattr(cli, "app", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug is not a user's mistake: its traceback shows
        main(["job", "status"])

@pytest.mark.parametrize("args, says", [
    (["predict", "--data", "d", "--out", "o", "--model-version", "v", "--probs", "p", "--limit", "0"], "--limit"),
    (["predict", "--data", "d", "--out", "o", "--model-version", "v", "--probs", "p", "--min-pixels", "-5"],
     "--min-pixels"),
    (["batch", "--round", "r", "--scale", "0"], "--scale"),
    (["batch", "--round", "r", "--batch-size", "0"], "--batch-size"),
    (["batch", "--round", "r", "--workers", "0"], "--workers"),
    (["evaluate", "--model", "m", "--data", "d", "--max-slices", "0"], "--max-slices"),
    (["export", "--model", "m", "--out", "o", "--parity-samples", "0"], "--parity-samples"),
    (["review", "add-reviewer", "zed", "--link-ttl", "-5"], "--link-ttl"),
    (["review", "add-reviewer", "zed", "--url", "notaurl"], "--url: expected the portal's address"),
    (["train", "--data", "d", "--out", "o", "--epochs", "-1"], "--epochs): expected an integer >= 1, got -1"),
    (["train", "--data", "d", "--out", "o", "--lr", "0"], "--lr): expected a number > 0"),
])
def test_out_of_range_options_are_refused_before_any_work(args, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written

def test_line_progress_prints_first_update_tenths_and_description_changes():
    import io

    from rich.console import Console

    from qa_workflow.cli.console import LineProgress, TrainBar

    out = io.StringIO()
    now = [100.0]
    bar = LineProgress(Console(file=out, width=200), interval_s=5.0, clock=lambda: now[0])
    task = bar.add_task("predict pool", total=20)
    assert out.getvalue() == ""  # added only: an error raised now stays one line
    for _ in range(20):
        now[0] += 0.5
        bar.advance(task)
    unknown = bar.add_task("download", total=None)
    bar.update(unknown, completed=1)
    now[0] += 1
    bar.update(unknown, completed=2)  # within interval_s of the last line: nothing
    now[0] += 5
    bar.update(unknown, completed=3)
    train = TrainBar(bar, "retraining")
    train(type("E", (), {"kind": "start", "epochs": 2, "epoch": 1})())
    train(type("E", (), {"kind": "epoch", "epochs": 2, "epoch": 1, "loss": 0.5, "val_mean_dice": 0.75})())
    lines = out.getvalue().splitlines()
    assert lines[0] == "    0.5s  predict pool  1/20"
    assert [line.split("  ")[-1] for line in lines[1:11]] == [f"{k}/20" for k in range(2, 21, 2)]
    assert lines[10] == "   10.0s  predict pool  20/20"
    assert lines[11:] == ["   10.0s  download  1", "   16.0s  download  3", "   16.0s  retraining  0/2",
                          "   16.0s  retraining loss 0.500 val Dice 0.750  1/2"]
    # two runs side by side (training.parallel): one bar each, named by the run
    train(type("E", (), {"kind": "end", "epochs": 2, "epoch": 2})())
    side = TrainBar(bar, "training")
    for run in ("unet", "enet"):
        side(type("E", (), {"kind": "start", "epochs": 3, "epoch": 1, "run": run})())
    side(type("E", (), {"kind": "epoch", "epochs": 3, "epoch": 1, "loss": 0.9, "val_mean_dice": 0.4, "run": "enet"})())
    side(type("E", (), {"kind": "end", "epochs": 3, "epoch": 3, "run": "unet"})())
    assert out.getvalue().splitlines()[15:] == ["   16.0s  training U-Net  0/3", "   16.0s  training ENet  0/3",
                                                "   16.0s  training ENet loss 0.900 val Dice 0.400  1/3"]
    assert list(side.tasks) == ["enet"]


def test_a_long_command_shows_progress_as_lines_when_not_on_a_terminal(monkeypatch, capsys, tmp_path):
    # `segqa data synth` piped to a log: one line per step with the elapsed time, not silence
    import qa_workflow.cli.data as data_cli
    import training.cohort

    def fake_build_cohort(out, n, *, progress, **_options):
        for k in range(n):
            progress(f"sub-{k + 1:03d}")

    monkeypatch.setattr(training.cohort, "build_cohort", fake_build_cohort)
    monkeypatch.setattr(data_cli, "_summary", lambda out: f"wrote {out}")
    assert main(["data", "synth", "--subjects", "3", "--out", str(tmp_path / "c")]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote {tmp_path / 'c'}"
    lines = captured.err.splitlines()
    assert len(lines) == 3 and all(line.strip().split()[0].endswith("s") for line in lines)
    assert lines[0].endswith("synthesising subjects  1/3  sub-001") and lines[-1].endswith("3/3  sub-003")


def test_predict_names_a_missing_probs_folder_and_a_file_given_as_a_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--data", "d", "--out", "o", "--model-version", "v", "--probs", "nope"]) == 2
    assert "--probs nope: no such folder" in capsys.readouterr().err and not (tmp_path / "o").exists()

    from training.modelcard import read_card

    (tmp_path / "reviews.csv").write_text("x")
    with pytest.raises(SegqaError, match="reviews.csv: a file, expected a model folder"):
        read_card(tmp_path / "reviews.csv")
    with pytest.raises(SegqaError, match="nowhere: no such model folder"):
        read_card(tmp_path / "nowhere")
