"""`onevision ab report`: per-variant business metrics of a live experiment, from the event
stream alone (the exposures serving logged and the clicks and orders that followed, all keyed
by request id and carrying the variant).

Per variant: requests, item CTR (clicks / exposures), PV CTR (requests with a click / requests),
CVR (requests with an order / requests with a click) and orders per thousand requests, each with
a 95% confidence interval from a bootstrap over requests (the unit of randomization is the user,
whose requests are few in a short test, so requests are treated as independent) and a two-sided
p-value against the control from the bootstrap standard errors. Markdown, PNG and JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = ("item_ctr", "pv_ctr", "cvr", "orders_per_1k")
LABELS = {"item_ctr": "item CTR", "pv_ctr": "PV CTR", "cvr": "CVR", "orders_per_1k": "orders / 1k requests"}


def read_events(settings, experiment: str | None = None, timeout_s: float = 30.0) -> list[dict]:
    """Every event on the events topic that carries a variant (of `experiment` if given), read
    from the beginning to the end offsets at call time."""
    from kafka import KafkaConsumer, TopicPartition

    topic = settings.kafka.events_topic
    c = KafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False,
                      value_deserializer=None, consumer_timeout_ms=2000)
    parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
    c.assign(parts)
    c.seek_to_beginning(*parts)
    end = c.end_offsets(parts)
    out, done = [], {tp for tp in parts if end[tp] == 0}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(parts) and time.monotonic() < deadline:
        for tp, records in c.poll(timeout_ms=500, max_records=5000).items():
            for m in records:
                try:
                    e = json.loads(m.value)
                except (ValueError, TypeError):
                    continue  # malformed events are the DLQ's business, not the report's
                if (isinstance(e, dict) and e.get("variant")
                        and (experiment is None or e.get("experiment") == experiment)):
                    out.append(e)
            if c.position(tp) >= end[tp]:
                done.add(tp)
    c.close()
    return out


def per_request(events: list[dict]) -> dict[str, np.ndarray]:
    """variant -> (R, 3) exposures, clicks, orders of each of its requests."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    column = {"exposure": 0, "click": 1, "order": 2}
    for e in events:
        if e.get("type") in column and e.get("request_id"):
            counts[e["variant"], e["request_id"]][column[e["type"]]] += 1
    out: dict[str, list] = defaultdict(list)
    for (variant, _), row in counts.items():
        out[variant].append(row)
    return {v: np.asarray(rows, np.float64) for v, rows in out.items()}


def _metrics(rows: np.ndarray) -> np.ndarray:
    """(B, R, 3) resamples -> (B, 4) metrics."""
    exp, clk, ordr = rows[..., 0].sum(-1), rows[..., 1].sum(-1), rows[..., 2].sum(-1)
    n = rows.shape[-2]
    clicked, ordered = (rows[..., 1] > 0).sum(-1), (rows[..., 2] > 0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([clk / exp, clicked / n, ordered / clicked, 1000 * ordr / n], -1)


def summarize(requests: dict[str, np.ndarray], control: str, resamples: int = 2000, seed: int = 0) -> dict:
    if control not in requests:
        raise ValueError(f"control variant {control!r} has no requests; variants seen: {sorted(requests)}")
    rng = np.random.default_rng(seed)
    out, boot = {}, {}
    for variant, rows in sorted(requests.items()):
        point = _metrics(rows[None])[0]
        idx = rng.integers(len(rows), size=(resamples, len(rows)))
        boot[variant] = _metrics(rows[idx])
        lo, hi = np.nanpercentile(boot[variant], [2.5, 97.5], axis=0)
        out[variant] = {"requests": len(rows), "exposures": int(rows[:, 0].sum()), "clicks": int(rows[:, 1].sum()),
                        "orders": int(rows[:, 2].sum()),
                        **{m: {"value": float(point[i]), "ci95": [float(lo[i]), float(hi[i])]}
                           for i, m in enumerate(METRICS)}}
    for variant in out:
        for i, m in enumerate(METRICS):
            if variant == control:
                continue
            se = math.hypot(np.nanstd(boot[variant][:, i]), np.nanstd(boot[control][:, i]))
            diff = out[variant][m]["value"] - out[control][m]["value"]
            out[variant][m]["p_value_vs_control"] = float(math.erfc(abs(diff / se) / math.sqrt(2))) if se > 0 else 1.0
    ranking = sorted(out, key=lambda v: -out[v]["orders_per_1k"]["value"])
    return {"control": control, "variants": out, "ranking_by_orders_per_1k": ranking}


def markdown(report: dict) -> str:
    head = "| variant | requests | " + " | ".join(LABELS[m] for m in METRICS) + " |"
    lines = [f"# A/B report{' for ' + report['experiment'] if report.get('experiment') else ''} "
             f"(control: {report['control']})",
             "", head, "|---|---:|" + "---:|" * len(METRICS)]
    for v, row in report["variants"].items():
        cells = []
        for m in METRICS:
            x = row[m]
            scale = 1 if m == "orders_per_1k" else 100
            p = f", p={x['p_value_vs_control']:.3g}" if "p_value_vs_control" in x else ""
            cells.append(f"{scale * x['value']:.2f} [{scale * x['ci95'][0]:.2f}, {scale * x['ci95'][1]:.2f}]{p}")
        lines.append(f"| {v} | {row['requests']} | " + " | ".join(cells) + " |")
    lines += ["", "CTRs and CVR in %, 95% bootstrap intervals, p-values against the control.",
              f"Ranking by orders per thousand requests: {' > '.join(report['ranking_by_orders_per_1k'])}", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(report["variants"])
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.4))
    for ax, m in zip(axes, METRICS):
        vals = [report["variants"][v][m]["value"] for v in variants]
        lo = [vals[i] - report["variants"][v][m]["ci95"][0] for i, v in enumerate(variants)]
        hi = [report["variants"][v][m]["ci95"][1] - vals[i] for i, v in enumerate(variants)]
        ax.bar(variants, vals, yerr=[lo, hi], capsize=4,
               color=["#888" if v == report["control"] else "#3a7" for v in variants])
        ax.set_title(LABELS[m])
        ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ab_report(settings, out_dir: Path, control: str, experiment: str | None = None) -> tuple[Path, dict]:
    events = read_events(settings, experiment)
    if not events:
        raise ValueError(f"no events with a variant on {settings.kafka.events_topic}"
                         f"{' for experiment ' + experiment if experiment else ''}: run `onevision sim traffic` first")
    report = {"experiment": experiment, "events": len(events), **summarize(per_request(events), control)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ab.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "ab.md").write_text(markdown(report))
    plot(report, out_dir / "ab.png")
    return path, report
