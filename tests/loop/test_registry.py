"""The model registry: the promotion rule, versions, the champion and the log (local and S3)."""

import json

import pytest

from qa_workflow.contract import SegqaError
from qa_workflow.loop.registry import PromotionDecision, Registry, decide_promotion


def _m(mean, csf, gm, wm):
    return {"mean_foreground_dice": mean, "dice": {"csf": csf, "gray_matter": gm, "white_matter": wm}}


def test_first_model_is_promoted():
    ok, reasons = decide_promotion(_m(0.5, 0.4, 0.5, 0.6), None)
    assert ok and "first model" in reasons[0]


def test_promotion_rule():
    champ = _m(0.80, 0.70, 0.80, 0.90)
    assert decide_promotion(_m(0.81, 0.695, 0.84, 0.90), champ)[0]  # csf drops 0.005 <= 0.01
    ok, reasons = decide_promotion(_m(0.79, 0.80, 0.80, 0.77), champ)  # mean drops and wm drops 0.13
    assert not ok and len(reasons) == 2 and "mean foreground Dice drops" in reasons[0]
    ok, reasons = decide_promotion(_m(0.82, 0.68, 0.88, 0.90), champ)  # csf drops 0.02 > 0.01
    assert not ok and reasons == ["csf Dice drops 0.7000 -> 0.6800 (more than 0.01)"]
    assert decide_promotion(_m(0.82, 0.68, 0.88, 0.90), champ, tolerance=0.05)[0]
    assert decide_promotion(_m(0.81, 0.69, 0.88, 0.90), champ)[0]  # csf drops exactly 0.01 (0.70 - 0.69 > 0.01)
    with pytest.raises(SegqaError):
        decide_promotion(champ, champ, tolerance=-1)


def _model_dir(tmp_path, name):
    d = tmp_path / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "best.params").write_bytes(b"\x00\x01")
    (d / "model_card.json").write_text(json.dumps({"version": name}))
    return d


@pytest.mark.parametrize("remote", [False, True])
def test_registry_versions_champion_and_log(tmp_path, remote, request):
    root = str(tmp_path / "models")
    if remote:
        root = f"s3://{request.getfixturevalue('s3_bucket')}/work/models"
    reg = Registry(root)
    assert reg.champion("enet") is None and reg.versions("enet") == []
    reg.add("enet", "v0001", _model_dir(tmp_path, "a"))
    reg.add("enet", "v0002", _model_dir(tmp_path, "b"))
    assert reg.versions("enet") == ["v0001", "v0002"]
    reg.record(PromotionDecision("enet", "v0001", None, True, ["first"], _m(.5, .5, .5, .5), None, 0.01, round=0))
    reg.record(PromotionDecision("enet", "v0002", "v0001", False, ["worse"], _m(.4, .4, .4, .4),
                                 _m(.5, .5, .5, .5), 0.01, round=1))
    assert reg.champion("enet") == "v0001"
    assert [d["promote"] for d in Registry(root).decisions()] == [True, False]
    with pytest.raises(SegqaError, match="not in the registry"):
        reg.set_champion("enet", "v0099")
