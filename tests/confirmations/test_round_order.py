"""One round ordering everywhere: with an item reviewed in round-9 and again in round-10, the store export and
the retraining set both take round-10's mask (text order would put round-9 last)."""

from __future__ import annotations

from qa_workflow.confirmations.export import export_review_records
from qa_workflow.confirmations.store import ItemRecord, Vote, open_store
from qa_workflow.loop.retraining import plan_slices, store_outcomes


def test_store_export_and_retraining_set_agree_on_the_latest_round(tmp_path):
    uri = f"sqlite:///{tmp_path}/reviews.db"
    store = open_store(uri)
    item_id = "sub-001/040/csf"
    for rnd, decision, model in (("round-9", "reject", "unet-r9"), ("round-10", "accept", "unet-r10")):
        item = ItemRecord(item_id=item_id, class_name="csf", confidence=0.7, round=rnd, model_version=model,
                          subject="sub-001", slice_id="sub-001/040", mask_uri=f"file:///pred/{rnd}/sub-001/040.png")
        store.record_votes([(item, Vote(job=f"job-{rnd}", item_id=item_id, worker_id="w1", decision=decision))])
    rows, superseded = export_review_records(store)
    store.close()

    assert superseded == 1
    assert [(r["round"], r["model_version"], r["confirm_count"]) for r in rows] == [("round-10", "unet-r10", 1)]
    plans = plan_slices(store_outcomes(uri))
    assert [(p.round, p.confirmed) for p in plans] == [("round-10", ("csf",))]
