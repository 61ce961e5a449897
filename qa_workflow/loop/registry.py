"""The model registry: versioned model folders per network, a CHAMPION pointer, and the promotion log.

Layout under the registry root (a local folder, ``file://`` URI or ``s3://bucket/prefix``)::

    ROOT/<network>/<version>/...        a model directory as written by `segqa train` (model_card.json,
                                        metrics.json, config.json, checkpoints/best.params) — the resume
                                        state (checkpoints/last.*) is left out
    ROOT/<network>/CHAMPION             one line: the champion's version
    ROOT/decisions.jsonl                one JSON line per champion/challenger decision (appended, never rewritten
                                        in place: the whole file is written to a temp name and renamed)

The promotion rule is a pure function (`decide_promotion`): the challenger replaces the champion only if its
mean foreground Dice on the held-out `test` split does not drop and no tissue class drops by more than a
tolerance (default 0.01). A first model (no champion yet) is promoted by definition.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qa_workflow import storage
from qa_workflow.contract import REVIEW_CLASSES, SegqaError, utc_now_iso

DEFAULT_TOLERANCE = 0.01
CHAMPION_FILE = "CHAMPION"
DECISIONS_FILE = "decisions.jsonl"


@dataclass(frozen=True)
class PromotionDecision:
    network: str
    challenger: str
    champion: str | None
    promote: bool
    reasons: list[str]
    challenger_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None
    tolerance: float
    round: int | None = None
    decided_at: str = field(default_factory=utc_now_iso)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(challenger: Mapping[str, Any], champion: Mapping[str, Any] | None,
                     tolerance: float = DEFAULT_TOLERANCE) -> tuple[bool, list[str]]:
    """Champion/challenger rule on evaluation metrics of the same held-out split.

    Both mappings hold ``mean_foreground_dice`` and ``dice`` = {class_name: Dice} (as written by
    `segqa evaluate`). Returns (promote, reasons); reasons explain a refusal or say why it passed.
    """
    if tolerance < 0:
        raise SegqaError(f"tolerance must be >= 0, got {tolerance}")
    if champion is None:
        return True, ["no champion yet: the first model is promoted"]
    reasons: list[str] = []
    ch_mean, cu_mean = float(challenger["mean_foreground_dice"]), float(champion["mean_foreground_dice"])
    if ch_mean < cu_mean:
        reasons.append(f"mean foreground Dice drops {cu_mean:.4f} -> {ch_mean:.4f}")
    for cls in REVIEW_CLASSES:
        a = challenger.get("dice", {}).get(cls.name)
        b = champion.get("dice", {}).get(cls.name)
        if a is None or b is None:
            continue
        if float(b) - float(a) > tolerance + 1e-9:  # a drop of exactly the tolerance passes (0.80 - 0.79 > 0.01)
            reasons.append(f"{cls.name} Dice drops {float(b):.4f} -> {float(a):.4f} (more than {tolerance:g})")
    if reasons:
        return False, reasons
    return True, [f"mean foreground Dice {cu_mean:.4f} -> {ch_mean:.4f}; no class drops more than {tolerance:g}"]


class Registry:
    """Versioned models per network under a root URI (local path, file:// or s3://)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)

    # -- paths
    def _uri(self, *parts: str) -> str:
        return storage.join(self.root, *parts)

    def model_uri(self, network: str, version: str) -> str:
        return self._uri(network, version)

    # -- queries
    def champion(self, network: str) -> str | None:
        uri = self._uri(network, CHAMPION_FILE)
        if not storage.exists(uri):
            return None
        version = storage.read_text(uri).strip()
        return version or None

    def versions(self, network: str) -> list[str]:
        prefix = self._uri(network)
        if not storage.is_s3(prefix) and not Path(storage.local_path(prefix)).is_dir():
            return []
        found = set()
        for uri in storage.list_uris(prefix if storage.is_s3(prefix) else prefix):
            rel = uri[len(prefix):].lstrip("/")
            if rel.endswith("model_card.json") and rel.count("/") == 1:
                found.add(rel.split("/")[0])
        return sorted(found)

    def decisions(self) -> list[dict[str, Any]]:
        uri = self._uri(DECISIONS_FILE)
        if not storage.exists(uri):
            return []
        return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]

    # -- updates
    def add(self, network: str, version: str, model_dir: str | os.PathLike[str]) -> str:
        """Copy a local model directory into the registry as ``network/version``; returns its URI."""
        src = Path(model_dir)
        if not (src / "model_card.json").is_file():
            raise SegqaError(f"{src}: not a model directory (no model_card.json)")
        dest = self.model_uri(network, version)
        if storage.exists(storage.join(dest, "model_card.json")):
            return dest  # already registered (idempotent re-run)
        # the deployable model only: the resume state (checkpoints/last.*) stays with the training run
        files = sorted(p for p in src.rglob("*") if p.is_file()
                       and not (p.parent.name == "checkpoints" and p.name.startswith("last.")))
        # model_card.json last: its presence marks a complete copy
        files.sort(key=lambda p: p.name == "model_card.json")
        for p in files:
            storage.write_bytes(storage.join(dest, p.relative_to(src).as_posix()), p.read_bytes())
        return dest

    def set_champion(self, network: str, version: str) -> None:
        if version not in self.versions(network):
            raise SegqaError(f"{network} version {version} is not in the registry at {self.root}")
        storage.write_text(self._uri(network, CHAMPION_FILE), version + "\n")

    def record(self, decision: PromotionDecision) -> None:
        """Append a decision to decisions.jsonl and move the CHAMPION pointer when it promotes."""
        lines = [json.dumps(d, sort_keys=True) for d in self.decisions()]
        lines.append(json.dumps(decision.to_json(), sort_keys=True))
        storage.write_text(self._uri(DECISIONS_FILE), "\n".join(lines) + "\n")
        if decision.promote:
            self.set_champion(decision.network, decision.challenger)
