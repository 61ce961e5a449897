"""`segqa store init | export | summary`."""

from __future__ import annotations

import csv
import json

import pytest

from qa_workflow.cli import main
from qa_workflow.confirmations.dynamodb import create_table
from qa_workflow.confirmations.store import ItemRecord, Vote, open_store
from qa_workflow.contract import REVIEW_RECORD_COLUMNS


def _fill(uri: str, client=None) -> None:
    st = open_store(uri, client=client)
    pairs = []
    for n in range(6):
        cls = "csf" if n < 4 else "white_matter"
        it = ItemRecord(f"sub-002/{n:03d}/{cls}", cls, n / 10, "1", "enet-v1", "sub-002", f"sub-002/{n:03d}")
        pairs += [(it, Vote("job", it.item_id, w, "reject" if (n + k) % 3 == 0 else "accept"))
                  for k, w in enumerate(["w1", "w2", "w3"])]
    st.record_votes(pairs)


def test_init_export_summary_on_sqlite(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/reviews.db"
    assert main(["store", "init", "--store", uri]) == 0
    _fill(uri)
    out = tmp_path / "out" / "reviews.csv"
    assert main(["store", "export", "--store", uri, "--out", str(out)]) == 0
    assert "6 reviewed items" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == REVIEW_RECORD_COLUMNS and len(rows) == 6
    assert sum(int(r["confirm_count"]) + int(r["disconfirm_count"]) for r in rows) == 18
    assert [p.name for p in out.parent.iterdir()] == ["reviews.csv"]  # no temporary files left behind

    assert main(["store", "summary", "--store", uri]) == 0
    table = capsys.readouterr().out
    assert "csf" in table and "white_matter" in table and "TOTAL" in table
    assert main(["store", "summary", "--store", uri, "--json"]) == 0
    groups = {g["class_name"]: g for g in json.loads(capsys.readouterr().out)["groups"]}
    assert groups["csf"]["items"] == 4 and groups["white_matter"]["votes"] == 6

    assert main(["store", "export", "--store", uri, "--out", str(out), "--class", "white_matter"]) == 0
    assert {r["class_name"] for r in csv.DictReader(out.open())} == {"white_matter"}


def test_export_is_readable_by_the_analysis(tmp_path):
    records = pytest.importorskip("analysis.records")
    uri = f"sqlite:///{tmp_path}/reviews.db"
    _fill(uri)
    out = tmp_path / "reviews.csv"
    assert main(["store", "export", "--store", uri, "--out", str(out)]) == 0
    loaded = records.load_review_records(out)
    assert len(loaded) == 6 and loaded.scale == "unit"


def test_dynamodb_store_and_s3_output_through_the_environment(aws, monkeypatch, capsys):
    s3, ddb, bucket = aws
    create_table("segqa-cli", ddb)
    _fill("dynamodb://segqa-cli", client=ddb)
    monkeypatch.setenv("SEGQA_STORE", "dynamodb://segqa-cli")
    assert main(["store", "export", "--out", f"s3://{bucket}/reviews/r1.csv"]) == 0
    assert "6 reviewed items" in capsys.readouterr().out
    body = s3.get_object(Bucket=bucket, Key="reviews/r1.csv")["Body"].read().decode()
    assert body.splitlines()[0] == ",".join(REVIEW_RECORD_COLUMNS) and len(body.splitlines()) == 7
    assert main(["store", "summary", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["store"] == "dynamodb://segqa-cli"


def test_user_mistakes_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SEGQA_STORE", raising=False)
    out = tmp_path / "r.csv"
    out.write_text("keep me\n")
    cases = [
        (["store", "export", "--out", str(out)], "SEGQA_STORE is not set"),
        (["store", "export", "--store", f"sqlite:///{tmp_path}/none.db", "--out", str(out)], "no such store"),
        (["store", "summary", "--store", "mysql://db"], "unsupported store URI"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    uri = f"sqlite:///{tmp_path}/empty.db"
    assert main(["store", "init", "--store", uri]) == 0
    assert main(["store", "export", "--store", uri, "--out", str(out)]) == 2
    assert "no reviewed items" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"  # nothing half-written, nothing replaced
    assert not (tmp_path / "none.db").exists()


def test_export_corrections_writes_the_corrections_csv(tmp_path, capsys):
    from qa_workflow.confirmations.records import ConsolidatedMask, Correction
    from qa_workflow.contract import CORRECTION_COLUMNS

    uri = f"sqlite:///{tmp_path}/reviews.db"
    _fill(uri)
    out = tmp_path / "corrections.csv"
    assert main(["store", "export", "--store", uri, "--out", str(out), "--corrections"]) == 2
    assert "no corrections" in capsys.readouterr().err and not out.exists()
    st = open_store(uri)
    st.record_corrections([Correction("adj-1", "sub-002/001", "w1", "1", "/m/w1.png", True, 50.0)])
    st.put_consolidated_mask(ConsolidatedMask("adj-1", "sub-002/001", "1", "/m/consolidated.png"))
    assert main(["store", "export", "--store", uri, "--out", str(out), "--corrections"]) == 0
    assert "1 corrected slices" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == CORRECTION_COLUMNS
    assert rows[0]["mask_uri"] == "/m/consolidated.png" and rows[0]["seconds"] == "50.0"
