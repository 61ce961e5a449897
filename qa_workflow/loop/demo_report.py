"""``demo/report.html``: the loop at a glance — per round the human work (verify / adjust seconds, running cost
against scratch, auto-accepted masks and their audit), test Dice per network and per site, the thresholds, and
links to every round's analysis report and overlays. Opens offline: the chart and a few overlay thumbnails are embedded,
everything else is a relative link inside the workspace."""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2

from qa_workflow import storage
from qa_workflow.contract import CLASS_BY_NAME, NETWORK_LABELS, REVIEW_CLASSES

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>segqa demo — {{ rounds|length }} rounds</title>
<style>
 body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;
  padding:0 1rem}
 h1{font-size:1.6rem;margin-bottom:.2rem}
 h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
 .sub{color:#57606a;margin-top:0}
 table{border-collapse:collapse;width:100%;margin:.6rem 0;font-variant-numeric:tabular-nums;font-size:.8rem;
  table-layout:auto}
 th,td{border:1px solid #d0d7de;padding:.2rem .3rem;text-align:right} th{background:#f6f8fa;font-weight:600;
  vertical-align:bottom}
 td:first-child,th:first-child{text-align:left} td{white-space:nowrap} td.why{text-align:left;white-space:normal}
 .yes{color:#1a7f37;font-weight:600} .no{color:#9a6700}
 .chip{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.3em;vertical-align:-1px}
 .thumbs img{height:150px;margin:.2rem;border:1px solid #d0d7de} .note{color:#57606a;font-size:.9rem}
 .why{font-size:.9rem}
 code{background:#f6f8fa;padding:.1em .3em;border-radius:4px}
</style></head><body>
<h1>segqa — active-learning loop on the atlas cohort</h1>
<p class="sub">{{ cfg.subjects }} synthetic subjects × {{ cfg.slices }} slices{% if sites|length > 1 %} from
sites {{ sites|join(', ') }} ({% for n, d in cfg.initial_model.items() -%}
initial {{ netlabel[n] }} given: <code>{{ d }}</code>;
{% endfor %}{{ 'initial models' if not cfg.initial_model else 'the others' }} trained on site {{ sites[0] }} only;
pool and test hold all){% endif %} ·
{% if cfg.budget_seconds is not none %}review budget {{ seconds(cfg.budget_seconds) }} of human time per round
{%- endif %}
{%- if cfg.budget %} (at most {{ cfg.budget }} masks){% endif %} ·
routing: {{ 'calibrated acceptance (verify when P(accept) ≥ %g, else adjust)'|format(cfg.verify_min)
            if cfg.strategy == 'uncertainty' else 'random (baseline)' }} ·
{{ cfg.reviewers }} simulated reviewers per batch (error rate {{ '%.0f'|format(cfg.error_rate*100) }} %
{%- if cfg.escalate_to %}; masks they split on go to {{ cfg.escalate_to }} in all{% endif %}),
{{ cfg.correctors }} corrector{{ 's' if cfg.correctors != 1 }} per slice ·
thresholds: {{ cfg.method }}, max error {{ '%.0f'|format(cfg.max_error*100) }} % at
{{ '%.0f'|format(cfg.confidence*100) }} % confidence</p>

<h2>Human work per round</h2>
<table>
<tr><th>round</th><th>verified masks</th><th>accepted</th><th>auto-accepted</th><th>audited (rejected)</th>
<th>adjust slices routed / after reject</th><th>verdicts from corrections (accepted)</th>
<th>human time verify / adjust</th><th>planned / budget</th>
<th>human time so far</th><th>scratch so far</th></tr>
{% for r in rounds %}
<tr><td>{{ r.round }}</td><td>{{ r.reviewed }}{% if r.escalated %} ({{ r.escalated }} split, escalated:
{{ r.escalated_accepted }} accepted){% endif %}</td><td>{{ r.accepted_items }} ({{ pct(r.acceptance_rate) }})</td>
<td>{{ r.auto_accepted + r.audit }}</td>
<td>{{ r.audit }}{% if r.audit %} ({{ r.audit_errors }}, {{ pct(r.audit_errors / r.audit) }}){% endif %}</td>
<td>{{ r.routed_adjust_slices }} / {{ r.chained_adjust_slices }}
{%- if r.deferred_adjust_slices %} ({{ r.deferred_adjust_slices }} deferred: budget spent){% endif %}</td>
<td>{{ r.implied_verdicts }} ({{ r.implied_accepted }})</td>
<td>{{ seconds(r.verify_seconds) }} / {{ seconds(r.adjust_seconds) }}</td>
<td>{{ seconds(r.planned_seconds) }} / {{ seconds(r.budget_seconds) if r.budget_seconds is not none else '—' }}</td>
<td>{{ seconds(r.human_so_far) }}</td><td>{{ seconds(r.scratch_so_far) }}
{%- if r.human_so_far %} ({{ '%.1f'|format(r.scratch_so_far / r.human_so_far) }}×){% endif %}</td></tr>
{% endfor %}
</table>
<p class="note">Verified = masks reviewers checked in bulk (verify batches, audit included); accepted = masks every
reviewer accepted, or, after a second opinion on a split, a majority two votes ahead (they join the training set,
the rest of their slice marked ignore). Auto-accepted = masks at or
above their class's threshold (used by this round's routing), of which a random 5 % were audited blind; audited
(rejected) is how many of those the reviewers rejected — the threshold's error, measured. Adjust slices: routed =
sent straight to correction because the calibrated P(accept) was low; after reject = corrected because a verifier
rejected a mask of theirs (the chained job). Each corrected slice joins the training set as a full label, and
judges the model's masks there by the reviewers' bar (surface Dice at 1 px ≥ 0.9 against the correction): those
verdicts join the threshold analysis beside the verifiers' (docs/loop.md).
Human time comes from the store (every vote and correction carries its seconds; in simulation the cost model:
3 s per verified mask, 60 s per corrected slice); planned = what routing expected to spend within the round's budget;
scratch = drawing every slice put before a person from nothing (240 s each), and how many times more it would cost.</p>

<h2>Test Dice per network and site</h2>
<table>
<tr><th>round</th>
{% for n in networks %}{% for c in classes %}<th>{{ netlabel[n] }} {{ c.short }}</th>{% endfor -%}
<th>{{ netlabel[n] }} mean</th>{% for site in sites if site_dice_any %}<th>{{ netlabel[n] }} site {{ site }}</th>
{%- endfor %}{% endfor %}<th>promoted</th><th>analysis</th></tr>
<tr><td>initial</td>
{% for n in networks %}{% for c in classes %}<td>{{ fmt(initial[n].get(c.name)) }}</td>{% endfor -%}
<td>{{ fmt(initial[n].get('mean_foreground')) }}</td>{% for site in sites if site_dice_any -%}
<td>{{ fmt(initial_sites.get(n, {}).get(site, {}).get('mean_foreground')) }}</td>{%- endfor %}{% endfor %}
<td class="note">{% if cfg.initial_model %}{% for n in networks %}{{ netlabel[n] }} {{ 'given' if n in cfg.initial_model
else 'trained' }}{{ ', ' if not loop.last }}{% endfor %}{% else %}train split{% endif %}</td><td></td></tr>
{% for r in rounds %}
<tr><td>{{ r.round }}</td>
{% for n in networks %}{% for c in classes %}<td>{{ fmt(r.dice[n].get(c.name)) }}</td>{% endfor -%}
<td>{{ fmt(r.dice[n].get('mean_foreground')) }}</td>{% for site in sites if site_dice_any -%}
<td>{{ fmt(r.site_dice.get(n, {}).get(site, {}).get('mean_foreground')) }}</td>{%- endfor %}{% endfor %}
<td>{% for n, p in r.promoted.items() -%}
<span class="{{ 'yes' if p else 'no' }}">{{ netlabel[n] }}&nbsp;{{ 'yes' if p else 'no' }}</span><br>{% endfor %}</td>
<td><a href="{{ r.report_rel }}">report</a></td></tr>
{% endfor %}
</table>
<p class="note">Dice: the champion after the round, on the held-out <code>test</code> subjects (never reviewed);
CSF, GM, WM and mean over all test slices, site columns = mean foreground Dice of one site's test slices.</p>
{% if chart %}<img alt="test Dice per round" src="data:image/png;base64,{{ chart }}" style="max-width:100%">{% endif %}

{% if challengers %}<h2>Challengers: what each round's labels bought</h2>
<table><tr><th>round</th><th>network</th><th>challenger mean</th>{% for site in sites if site_dice_any %}<th>site
{{ site }}</th>{% endfor %}<th>champion mean</th><th>decision</th></tr>
{% for c in challengers %}<tr><td>{{ c.round }}</td><td>{{ netlabel[c.network] }}</td><td>{{ fmt(c.mean) }}</td>
{% for site in sites if site_dice_any %}<td>{{ fmt(c.sites.get(site)) }}</td>{% endfor -%}
<td>{{ fmt(c.champion_mean) }}</td><td class="why"><span class="{{ 'yes' if c.promote else 'no' }}">
{{- 'promoted' if c.promote else 'refused' }}</span>: {{ c.reasons }}</td></tr>{% endfor %}
</table>
<p class="note">Each round retrains both networks (warm start from the champion) on everything labelled so far;
the challenger replaces the champion only if its mean foreground Dice on the test split does not drop and no class
drops more than the tolerance, so a challenger that gains on the new site while losing a class on the old one is
refused (docs/loop.md).</p>{% endif %}

<h2>Auto-accept thresholds after each round</h2>
<table><tr><th>round</th>{% for c in classes -%}
<th><span class="chip" style="background:{{ c.color }}"></span>{{ c.name }}</th>{% endfor %}</tr>
{% for r in rounds %}<tr><td>{{ r.round }}</td>{% for c in classes -%}
<td>{{ fmt(r.thresholds.get(c.name)) if r.thresholds.get(c.name) is not none
        else '— (none yet)' }}</td>{% endfor %}</tr>{% endfor %}
</table>
<p class="note">A threshold is used by the next round's selection; "none yet" means nothing of that class may be
auto-accepted
(each round's analysis report says how many more reviews would make one reachable).</p>
{% if why_none %}<p>Why not, after {{ rounds[-1].round }}:</p>
<ul class="why">{% for name, reason in why_none %}<li><b>{{ name }}</b>: {{ reason }}</li>{% endfor %}</ul>{% endif %}

<h2>Review overlays</h2>
{% for r in rounds %}<p><b>{{ r.round }}</b> — <a href="{{ r.overlays_rel }}">all overlays</a></p>
<div class="thumbs">{% for t in r.thumbs -%}
<img alt="overlay" src="data:image/png;base64,{{ t }}">{% endfor %}</div>{% endfor %}

<h2>Next steps</h2>
<p>Review for real in a browser: <code>segqa review add-reviewer alice</code>, then
<code>segqa review serve --round {{ last_round_dir }} --store {{ store_uri }}</code>.
Go to AWS: <code>make lambdas</code>, <code>segqa deploy</code>, then <code>segqa job create --round ...</code>
(see docs/aws.md).</p>
</body></html>
"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{float(v):.3f}"


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{100 * float(v):.0f} %"


def _chart(initial: dict[str, dict[str, float]], summaries: Sequence[Any], networks: Sequence[str],
           initial_sites: dict[str, dict[str, dict[str, float]]] | None = None, sites: Sequence[str] = ()
           ) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(len(summaries) + 1))
    labels = ["initial"] + [s.round for s in summaries]
    fig, axes = plt.subplots(1, len(networks), figsize=(5.2 * len(networks) + 1.3, 3.4), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], networks, strict=True):
        for c in REVIEW_CLASSES:
            ys = [initial.get(n, {}).get(c.name)] + [s.dice.get(n, {}).get(c.name) for s in summaries]
            ax.plot(xs, [float("nan") if y is None else y for y in ys], "o-", color=c.color, label=c.name)
        ys = [initial.get(n, {}).get("mean_foreground")] + [s.dice.get(n, {}).get("mean_foreground") for s in summaries]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], "s-", color="#333", label="mean")
        for site, style in zip(sites, (":", "--", "-."), strict=False):
            ys = [(initial_sites or {}).get(n, {}).get(site, {}).get("mean_foreground")] + [
                s.site_dice.get(n, {}).get(site, {}).get("mean_foreground") for s in summaries]
            if any(y is not None for y in ys):
                ax.plot(xs, [float("nan") if y is None else y for y in ys], "^" + style, color="#777",
                        label=f"mean, site {site}")
        ax.set_title(f"{NETWORK_LABELS.get(n, n)} champion — test Dice")
        ax.set_xticks(xs, labels, fontsize=8)
        ax.grid(alpha=.3)
    axes[0][0].set_ylabel("Dice")
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the lines, not on them
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _thumbs(overlays: Path, n: int = 4) -> list[str]:
    if not overlays.is_dir():
        return []
    files = sorted(overlays.rglob("*.png"))
    pick = files[:: max(1, len(files) // n)][:n]
    return [base64.b64encode(p.read_bytes()).decode() for p in pick]


def why_no_threshold(analysis_report: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(class, reason) for each class the analysis beside ``analysis_report`` (its thresholds.json) gave no
    threshold, in the contract's class order; [] when the file is missing or unreadable."""
    path = Path(analysis_report).parent / "thresholds.json"
    try:
        classes = json.loads(path.read_text())["classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(classes, dict):
        return []
    return [(c.name, str(classes[c.name].get("reason") or "no reason recorded")) for c in REVIEW_CLASSES
            if isinstance(classes.get(c.name), dict) and classes[c.name].get("threshold") is None]


def human_time(value: float | None) -> str:
    """Human time as people read it: 75 s, 12.5 min, 3.1 h."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value < 120:
        return f"{value:.0f} s"
    if value < 2 * 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def running_cost(summaries: Sequence[Any]) -> list[tuple[float, float]]:
    """(human seconds so far, scratch seconds so far) after each round: the loop's running cost against drawing
    every slice it put before a person from scratch."""
    out, human, scratch = [], 0.0, 0.0
    for s in summaries:
        human += s.verify_seconds + s.adjust_seconds
        scratch += s.scratch_seconds
        out.append((human, scratch))
    return out


def challenger_rows(decisions: Sequence[dict[str, Any]], round_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per round's promotion decision (the registry's decision log; the initial models' are left out):
    round name, network, the challenger's mean and per-site test Dice, the champion's mean, and the reasons."""
    rows = []
    for d in decisions:
        r = d.get("round")
        if not isinstance(r, int) or not 1 <= r <= len(round_names):
            continue
        metrics, champion = d.get("challenger_metrics") or {}, d.get("champion_metrics") or {}
        rows.append({"round": round_names[r - 1], "network": d["network"],
                     "mean": metrics.get("mean_foreground_dice"),
                     "sites": {site: v.get("mean_foreground") for site, v in (metrics.get("sites") or {}).items()},
                     "champion_mean": champion.get("mean_foreground_dice"), "promote": bool(d.get("promote")),
                     "reasons": "; ".join(d.get("reasons") or [])})
    return rows


def write_report(root: Path, cfg: Any, initial: dict[str, dict[str, float]], summaries: Sequence[Any],
                 initial_sites: dict[str, dict[str, dict[str, float]]] | None = None,
                 decisions: Sequence[dict[str, Any]] = ()) -> Path:
    """Write ``root/report.html`` (template above) and return its path. ``decisions``: the registry's decision
    log, for the challengers' table."""
    root = Path(root)
    rows = []
    for s, (human, scratch) in zip(summaries, running_cost(summaries), strict=True):
        d = asdict(s)
        d["report_rel"] = os.path.relpath(s.analysis_report, root)
        d["overlays_rel"] = os.path.relpath(s.overlays, root)
        d["thumbs"] = _thumbs(Path(s.overlays))
        d["human_so_far"], d["scratch_so_far"] = human, scratch
        rows.append(d)
    initial_sites = initial_sites or {}
    sites = list(getattr(cfg, "sites", ()) or ())
    site_dice_any = any(initial_sites.values()) or any(any(s.site_dice.values()) for s in summaries)
    classes = [{"name": c.name, "short": {"csf": "CSF", "gray_matter": "GM", "white_matter": "WM"}[c.name],
                "color": CLASS_BY_NAME[c.name].color} for c in REVIEW_CLASSES]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    last_round_dir = (os.path.relpath(summaries[-1].overlays, Path.cwd()).rsplit("/overlays", 1)[0] if summaries
                      else "ROUND")
    html = env.from_string(_TEMPLATE).render(
        cfg=cfg, rounds=rows, netlabel=NETWORK_LABELS, networks=list(cfg.networks), classes=classes, initial=initial,
        fmt=_fmt, pct=_pct, seconds=human_time, sites=sites, site_dice_any=site_dice_any,
        initial_sites=initial_sites, chart=_chart(initial, summaries, list(cfg.networks), initial_sites, sites),
        last_round_dir=last_round_dir, challengers=challenger_rows(decisions, [s.round for s in summaries]),
        why_none=why_no_threshold(summaries[-1].analysis_report) if summaries else [],
        store_uri=f"sqlite:///{(root / 'store.sqlite').resolve()}")
    out = root / "report.html"
    storage.write_text(str(out), html, content_type="text/html; charset=utf-8")
    return out
