"""Escalation: a second opinion on the masks a verify job's reviewers split on (docs/DECISIONS.md, "Escalation").

Three reviewers who disagree on a mask stand 2-1, and a split is not an answer: the chained adjust job would send
the slice to correction (60 s of a person) although two of three reviewers found the mask good. Escalation asks
more reviewers about those masks only, in a second verify job: the same batch format (ARCHITECTURE §6), the same
template and Lambdas, the items of the source job's batches that split, grouped as they were (one class per
batch). The store adds the new votes to the item's counts, and `contract.vote_outcome` decides: a majority
that leads by two votes (4-1, 1-4) is an answer, 3-2 stays split. In Ground Truth the escalation job goes to a
different work team (senior reviewers, say), since a work team cannot exclude the reviewers who already voted on
an item; the self-hosted portal serves the escalation job to everyone except the people who voted on a batch's
masks in the source job (`earlier_voters`); the simulated reviewers of the demo are new reviewers with their own
error draws.

Under the destination (the round's batch destination by default)::

    escalate/<source job>/<batch_id>-escalated.json   the source batch's split items
    escalate/<source job>/manifest.jsonl              one {"source-ref": <batch URI>} per batch: the job's input

Overlays, images and masks are the source batches' own objects: nothing is rendered again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from qa_workflow import storage
from qa_workflow.confirmations.records import Store
from qa_workflow.contract import SPLIT, SegqaError, validate_batch, vote_outcome
from qa_workflow.rounds.adjusting import decided_in_output_manifest, job_folder, vote_counts, votes_of
from qa_workflow.rounds.round_dir import BATCHES_FILE

__all__ = ["ESCALATE_DIR", "EscalationBatches", "split_in_store", "split_in_output_manifest",
           "write_escalation_batches", "source_job_of", "earlier_voters"]

ESCALATE_DIR = "escalate"
_MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class EscalationBatches:
    """What `write_escalation_batches` wrote."""

    manifest: str
    batch_uris: list[str]
    items: int


def split_in_store(store: Store, job: str) -> list[str]:
    """Item ids whose votes in ``job`` split (`contract.vote_outcome`), sorted."""
    return sorted(iid for iid, (accepts, rejects) in vote_counts(store, job).items()
                  if vote_outcome(accepts, rejects) == SPLIT)


def split_in_output_manifest(uri: str, label_attribute_name: str) -> list[str]:
    """Item ids a verify job's Ground Truth output manifest marks ``split`` (its consolidation's ``items``)."""
    return sorted(iid for iid, decision in decided_in_output_manifest(uri, label_attribute_name).items()
                  if decision == SPLIT)


def source_job_of(manifest_uri: str) -> str | None:
    """The verify job an escalation manifest gives a second opinion on, read from where
    `write_escalation_batches` puts it (``.../escalate/<source job>/manifest.jsonl``); None for any other manifest.
    Job names (Ground Truth's and the portal's: letters, digits, ``-``) are their own folder names."""
    parts = manifest_uri.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-1] == _MANIFEST and parts[-3] == ESCALATE_DIR and parts[-2]:
        return parts[-2]
    return None


def earlier_voters(store: Store, jobs: Iterable[str]) -> dict[str, set[str]]:
    """Item id -> the worker ids who voted on it in any of ``jobs``: the people an escalation job must not ask
    again (their votes are already counted). A job without a vote in the store is an error (`votes_of`):
    excluding nobody would count those people twice."""
    voters: dict[str, set[str]] = {}
    for job in jobs:
        for vote in votes_of(store, job):
            voters.setdefault(vote.item_id, set()).add(vote.worker_id)
    return voters


def write_escalation_batches(round_dir: str, item_ids: Iterable[str], source_job: str, dest: str | None = None
                             ) -> EscalationBatches:
    """Write verify batches of ``item_ids`` (items of the round's verify batches) for a second opinion, and their
    manifest, under ``<dest>/escalate/<source job>/``; returns what was written. ``dest`` defaults to the round's
    batch destination (`segqa batch`'s ``batches.json``)."""
    wanted = set(item_ids)
    if not wanted:
        raise SegqaError(f"job {source_job}: no split items, so nothing to escalate")
    state_uri = storage.join(round_dir, BATCHES_FILE)
    if not storage.exists(state_uri):
        raise SegqaError(f"{round_dir}: no {BATCHES_FILE}; run 'segqa batch --round {round_dir}' first")
    state = storage.read_json(state_uri)
    if state.get("status") != "complete":
        raise SegqaError(f"{state_uri}: the round's batches are not complete (status {state.get('status')!r}); "
                         "run 'segqa batch' again to finish them")
    dest = str(dest or state["dest"]).rstrip("/")
    folder = storage.join(dest, ESCALATE_DIR, job_folder(source_job))
    uris: list[str] = []
    found: set[str] = set()
    for entry in state.get("batches", []):
        if not wanted.intersection(entry.get("items", ())):
            continue
        batch = storage.read_json(entry["uri"])
        items = [it for it in batch["items"] if it["item_id"] in wanted]
        found.update(it["item_id"] for it in items)
        second = validate_batch({**batch, "batch_id": f"{batch['batch_id']}-escalated", "items": items},
                                f"escalation of batch {batch['batch_id']}")
        uri = storage.join(folder, f"{second['batch_id']}.json")
        storage.write_json(uri, second)
        uris.append(uri)
    missing = sorted(wanted - found)
    if missing:
        raise SegqaError(f"{state_uri}: item(s) in no verify batch of this round: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    manifest = storage.join(folder, _MANIFEST)
    storage.write_text(manifest, "".join(json.dumps({"source-ref": u}) + "\n" for u in uris),
                       content_type="application/jsonl")
    return EscalationBatches(manifest=manifest, batch_uris=uris, items=len(found))
