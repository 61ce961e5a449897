"""Reviewer agreement: Krippendorff's alpha and Fleiss' kappa, each reviewer against the others, gold accuracy.

Two inputs:

- vote counts per item (``confirm_count``, ``disconfirm_count`` of the review records): enough for the chance-
  corrected agreement of the whole panel (alpha, kappa), because for two categories both depend only on how
  each item's votes split;
- per-vote data, when available (``--votes FILE`` or the store): a CSV ``item_id,worker_id,decision[,gold]``,
  one row per vote, ``decision`` ``accept`` | ``reject`` (the contract's decisions, any case), and optionally
  ``gold`` (``accept`` | ``reject`` on items with a known right answer, empty elsewhere; repeated on every vote
  of the item). This adds each reviewer's agreement with the majority of the *other* reviewers of the same items
  (leave-one-out, so a reviewer never outvotes themself; ties among the others are left out) and accuracy
  against gold.

Krippendorff's alpha (nominal) is the headline figure: it takes any number of reviewers per item and items
with a single vote simply do not count. Reading it (Krippendorff 2004): α ≥ 0.8 reliable, 0.667 ≤ α < 0.8
tentative, below that the reviewers' decisions should not be trusted as labels. For two categories:
α = 1 − (n − 1) · Σ_u a_u r_u / (m_u − 1) / (n_a · n_r), over items u with m_u ≥ 2 votes, a_u accepts and
r_u rejects, n = Σ m_u, n_a = Σ a_u, n_r = Σ r_u.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from qa_workflow import storage
from qa_workflow.contract import ACCEPT, DECISIONS, REJECT, SegqaError

__all__ = [
    "VOTE_COLUMNS", "VOTE_REQUIRED", "krippendorff_alpha_binary", "fleiss_kappa_binary", "AgreementSummary",
    "agreement_from_counts", "agreement_from_votes", "reviewer_table", "load_votes", "parse_votes",
    "validate_votes",
]

VOTE_REQUIRED = ("item_id", "worker_id", "decision")
VOTE_COLUMNS = VOTE_REQUIRED + ("gold",)


def krippendorff_alpha_binary(accepts: np.ndarray, rejects: np.ndarray) -> float:
    """Krippendorff's alpha, nominal, for accept/reject votes per item.

    accepts, rejects: (N,) non-negative int counts per item. Items with fewer than two votes are not
    pairable and are ignored. NaN when no item is pairable or every vote is the same (alpha is undefined:
    there is no variation to agree on).
    """
    a = np.asarray(accepts, dtype=np.float64)
    r = np.asarray(rejects, dtype=np.float64)
    m = a + r
    keep = m >= 2
    a, r, m = a[keep], r[keep], m[keep]
    n, n_a, n_r = m.sum(), a.sum(), r.sum()
    if n == 0 or n_a == 0 or n_r == 0:
        return float("nan")
    observed = (a * r / (m - 1)).sum()
    return float(1.0 - (n - 1) * observed / (n_a * n_r))


def fleiss_kappa_binary(accepts: np.ndarray, rejects: np.ndarray) -> float:
    """Fleiss' kappa for accept/reject votes, generalised to a varying number of reviewers per item.

    accepts, rejects: (N,) counts. P_i = Σ_k n_ik (n_ik − 1) / (m_i (m_i − 1)), P̄ = mean P_i over items with
    m_i ≥ 2; p_k = share of all votes in category k; κ = (P̄ − Σ p_k²) / (1 − Σ p_k²). NaN when undefined.
    """
    a = np.asarray(accepts, dtype=np.float64)
    r = np.asarray(rejects, dtype=np.float64)
    m = a + r
    keep = m >= 2
    a, r, m = a[keep], r[keep], m[keep]
    if m.size == 0:
        return float("nan")
    p_i = (a * (a - 1) + r * (r - 1)) / (m * (m - 1))
    p_bar = p_i.mean()
    p_a = a.sum() / m.sum()
    p_e = p_a ** 2 + (1 - p_a) ** 2
    if p_e >= 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


@dataclass(frozen=True)
class AgreementSummary:
    n_items: int  # items with at least one vote
    n_votes: int
    n_pairable_items: int  # items with two or more votes (the ones agreement is measured on)
    mean_votes_per_item: float
    pct_unanimous: float  # of pairable items, in percent
    krippendorff_alpha: float
    fleiss_kappa: float
    n_reviewers: int | None = None  # only with per-vote data
    n_gold_items: int | None = None
    gold_vote_accuracy: float | None = None  # share of votes on gold items that match gold
    gold_majority_accuracy: float | None = None  # share of gold items whose strict majority matches gold

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def agreement_from_counts(confirm: np.ndarray, disconfirm: np.ndarray) -> AgreementSummary:
    """Panel agreement from vote counts per item (the review records alone). confirm, disconfirm: (N,)."""
    a = np.asarray(confirm, dtype=np.int64)
    r = np.asarray(disconfirm, dtype=np.int64)
    m = a + r
    voted, pairable = m > 0, m >= 2
    unanimous = pairable & ((a == 0) | (r == 0))
    return AgreementSummary(
        n_items=int(voted.sum()), n_votes=int(m.sum()), n_pairable_items=int(pairable.sum()),
        mean_votes_per_item=float(m[voted].mean()) if voted.any() else float("nan"),
        pct_unanimous=float(100.0 * unanimous.sum() / pairable.sum()) if pairable.any() else float("nan"),
        krippendorff_alpha=krippendorff_alpha_binary(a, r), fleiss_kappa=fleiss_kappa_binary(a, r))


def _item_counts(votes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item code per vote (V,), accepts per item (I,), rejects per item (I,))."""
    codes, _ = pd.factorize(votes["item_id"])
    is_accept = (votes["decision"] == ACCEPT).to_numpy()
    accepts = np.bincount(codes, weights=is_accept).astype(np.int64)
    rejects = np.bincount(codes, weights=~is_accept).astype(np.int64)
    return codes, accepts, rejects


def agreement_from_votes(votes: pd.DataFrame) -> AgreementSummary:
    """Panel agreement plus gold accuracy from validated per-vote data (see `validate_votes`)."""
    codes, accepts, rejects = _item_counts(votes)
    base = agreement_from_counts(accepts, rejects)
    n_gold = vote_acc = maj_acc = None
    if "gold" in votes.columns:
        gold = votes["gold"].to_numpy()
        has_gold = pd.notna(votes["gold"]).to_numpy()
        if has_gold.any():
            vote_acc = float((votes["decision"].to_numpy()[has_gold] == gold[has_gold]).mean())
            item_gold = pd.Series(gold[has_gold], index=codes[has_gold]).groupby(level=0).first()
            idx = item_gold.index.to_numpy()
            majority = np.where(accepts[idx] > rejects[idx], ACCEPT,
                                np.where(rejects[idx] > accepts[idx], REJECT, "tie"))
            n_gold = int(idx.size)
            maj_acc = float((majority == item_gold.to_numpy()).mean())
    return AgreementSummary(**{**asdict(base), "n_reviewers": int(votes["worker_id"].nunique()),
                               "n_gold_items": n_gold, "gold_vote_accuracy": vote_acc,
                               "gold_majority_accuracy": maj_acc})


def reviewer_table(votes: pd.DataFrame) -> pd.DataFrame:
    """One row per reviewer, least agreeing first:
    ``worker_id, n_votes, accept_rate, n_compared, agreement_with_majority, n_gold, gold_accuracy``.

    ``agreement_with_majority``: share of the reviewer's votes that match the strict majority of the *other*
    reviewers of the same item (items where the others tie or there are no others are not compared).
    """
    codes, accepts, rejects = _item_counts(votes)
    is_accept = (votes["decision"] == ACCEPT).to_numpy()
    others_a = accepts[codes] - is_accept
    others_r = rejects[codes] - ~is_accept
    compared = others_a != others_r
    agree = compared & ((others_a > others_r) == is_accept)
    frame = pd.DataFrame({"worker_id": votes["worker_id"].to_numpy(), "accept": is_accept,
                          "compared": compared, "agree": agree})
    if "gold" in votes.columns:
        has_gold = pd.notna(votes["gold"]).to_numpy()
        frame["gold"] = has_gold
        frame["gold_right"] = has_gold & (votes["decision"].to_numpy() == votes["gold"].to_numpy())
    else:
        frame["gold"] = False
        frame["gold_right"] = False
    g = frame.groupby("worker_id", sort=True)
    out = pd.DataFrame({
        "n_votes": g.size(), "accept_rate": g["accept"].mean(), "n_compared": g["compared"].sum(),
        "n_agree": g["agree"].sum(), "n_gold": g["gold"].sum(), "n_gold_right": g["gold_right"].sum(),
    })
    with np.errstate(invalid="ignore", divide="ignore"):
        out["agreement_with_majority"] = np.where(out["n_compared"] > 0, out["n_agree"] / out["n_compared"], np.nan)
        out["gold_accuracy"] = np.where(out["n_gold"] > 0, out["n_gold_right"] / out["n_gold"], np.nan)
    out = out.reset_index().sort_values(["agreement_with_majority", "worker_id"], na_position="last")
    return out[["worker_id", "n_votes", "accept_rate", "n_compared", "agreement_with_majority", "n_gold",
                "gold_accuracy"]].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------
# I/O edge

def load_votes(uri: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a votes CSV (``item_id,worker_id,decision[,gold]``) from a path or URI."""
    source = os.fspath(uri)
    return parse_votes(storage.read_bytes(source), source=source)


def parse_votes(data: bytes, source: str = "votes") -> pd.DataFrame:
    if not data.strip():
        raise SegqaError(f"{source}: empty file; expected a CSV header {','.join(VOTE_REQUIRED)}[,gold] and one "
                         "row per vote")
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SegqaError(f"{source}: not a readable CSV file ({str(exc).strip().splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return validate_votes(frame, source)


def validate_votes(frame: pd.DataFrame, source: str = "votes", first_line: int = 2) -> pd.DataFrame:
    """Check per-vote rows; returns ``item_id, worker_id, decision`` (+ ``gold`` with NaN where unknown),
    decisions lower-cased. Raises SegqaError naming the line and column of the first problem."""
    missing = [c for c in VOTE_REQUIRED if c not in frame.columns]
    if missing:
        raise SegqaError(f"{source}: missing column(s) {', '.join(missing)}; expected "
                         f"{','.join(VOTE_REQUIRED)}[,gold]")
    if len(frame) == 0:
        raise SegqaError(f"{source}: no votes (the file has a header but no rows)")
    cols = [c for c in VOTE_COLUMNS if c in frame.columns]
    out = frame[cols].astype("string").apply(lambda s: s.str.strip()).reset_index(drop=True)
    lines = np.arange(first_line, first_line + len(out))

    def fail(mask: np.ndarray, col: str, problem: str) -> None:
        bad = np.flatnonzero(mask)
        if bad.size:
            i = int(bad[0])
            value = out[col].iloc[i]
            shown = "(empty)" if pd.isna(value) or value == "" else repr(str(value))
            more = f"; {bad.size - 1} more row(s) like it" if bad.size > 1 else ""
            raise SegqaError(f"{source}, line {lines[i]}: column {col}: {shown} {problem}{more}")

    for col in ("item_id", "worker_id"):
        fail((out[col].isna() | (out[col] == "")).to_numpy(), col, "is empty; every vote needs one")
    out["decision"] = out["decision"].str.lower()
    fail(~out["decision"].isin(DECISIONS).to_numpy(), "decision", f"is not one of {', '.join(DECISIONS)}")
    if "gold" in out.columns:
        gold = out["gold"].str.lower()
        gold = gold.where(gold != "", pd.NA)
        fail((gold.notna() & ~gold.isin(DECISIONS)).to_numpy(), "gold",
             f"is not one of {', '.join(DECISIONS)} (or empty for items without gold)")
        per_item = gold.dropna().groupby(out.loc[gold.notna(), "item_id"]).nunique()
        if (per_item > 1).any():
            item = per_item.index[per_item.to_numpy() > 1][0]
            rows = np.flatnonzero((out["item_id"] == item).to_numpy() & gold.notna().to_numpy())
            raise SegqaError(f"{source}, lines {', '.join(str(lines[i]) for i in rows[:3])}: column gold: item "
                             f"{item!r} has conflicting gold answers; give one per item")
        # an item's gold answer holds for every vote on it, also the rows that left the cell empty
        item_gold = gold.dropna().groupby(out.loc[gold.notna(), "item_id"]).first()
        gold = out["item_id"].map(item_gold)
        out["gold"] = gold.astype(object).where(gold.notna(), np.nan)
    dup = out.duplicated(["item_id", "worker_id"], keep="first").to_numpy()
    fail(dup, "worker_id", "voted twice on the same item; a vote is (item, reviewer) and counted once")
    out["item_id"] = out["item_id"].astype(object)
    out["worker_id"] = out["worker_id"].astype(object)
    out["decision"] = out["decision"].astype(object)
    return out
