"""`onevision ab report`: per-variant business metrics of a live experiment, from the event
stream alone (the exposures serving logged and the clicks and orders that followed, all keyed
by request id and carrying the variant and the user).

Per variant: requests, item CTR (clicks / exposures), PV CTR (requests with a click / requests),
CVR (requests with an order / requests with a click) and orders per thousand requests, each with
a 95% confidence interval from a bootstrap over the experiment's randomization unit (the user,
or the request for an experiment that hashes request ids: a shopper's requests are not
independent when the shopper is what was randomized) and a two-sided p-value against the
control from the bootstrap standard errors.

What the data can tell: variants are ranked by orders per thousand requests only where the
difference is significant (p < 0.05); otherwise the report says so, with the requests per
variant a difference of the observed size would need to show at 80% power (the observed standard
error scaled by sample size). A sample-ratio mismatch (units per variant against the
experiment's weights, chi-square p < 0.001) is flagged: the split itself is then suspect.
Markdown, PNG and JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats

METRICS = ("item_ctr", "pv_ctr", "cvr", "orders_per_1k")
LABELS = {"item_ctr": "item CTR", "pv_ctr": "PV CTR", "cvr": "CVR", "orders_per_1k": "orders / 1k requests"}
UNITS = ("user", "request")  # what the experiment randomized (its GrowthBook hash attribute, without "_id")
ALPHA, POWER, SRM_ALPHA = 0.05, 0.8, 0.001
# per unit: requests, exposures, clicks, orders, requests with a click, requests with an order
REQUESTS, EXPOSURES, CLICKS, ORDERS, CLICKED, ORDERED = range(6)


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


def per_unit(events: list[dict], unit: str = "user") -> dict[str, np.ndarray]:
    """variant -> (U, 6) per randomization unit (`unit`: user or request): its requests,
    exposures, clicks, orders, requests with a click and requests with an order. A request's
    events without a user id count as a unit of their own."""
    if unit not in UNITS:
        raise ValueError(f"unknown randomization unit {unit!r}; one of {', '.join(UNITS)}")
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    owner: dict[tuple[str, str], str] = {}
    column = {"exposure": 0, "click": 1, "order": 2}
    for e in events:
        if e.get("type") in column and e.get("request_id"):
            key = e["variant"], e["request_id"]
            counts[key][column[e["type"]]] += 1
            if e.get("user_id"):
                owner[key] = str(e["user_id"])
    units: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(6))
    for (variant, request), (exposures, clicks, orders) in counts.items():
        who = owner.get((variant, request), "request:" + request) if unit == "user" else request
        units[variant, who] += (1, exposures, clicks, orders, clicks > 0, orders > 0)
    out: dict[str, list] = defaultdict(list)
    for (variant, _), row in units.items():
        out[variant].append(row)
    return {v: np.asarray(rows, np.float64) for v, rows in out.items()}


def _metrics(rows: np.ndarray) -> np.ndarray:
    """(B, U, 6) resamples of units -> (B, 4) metrics, each a ratio of sums over the units."""
    t = rows.sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([t[..., CLICKS] / t[..., EXPOSURES], t[..., CLICKED] / t[..., REQUESTS],
                         t[..., ORDERED] / t[..., CLICKED], 1000 * t[..., ORDERS] / t[..., REQUESTS]], -1)


def _p_value(diff: float, se: float) -> float:
    return float(math.erfc(abs(diff / se) / math.sqrt(2))) if se > 0 else 1.0


def summarize(units: dict[str, np.ndarray], control: str, unit: str = "user", weights: dict[str, float] | None = None,
              resamples: int = 2000, seed: int = 0) -> dict:
    """The report's numbers from `per_unit`'s rows; `weights`: the share of units the experiment
    sends each variant (equal when not given), for the sample-ratio check."""
    if control not in units:
        raise ValueError(f"control variant {control!r} has no requests; variants seen: {sorted(units)}")
    rng = np.random.default_rng(seed)
    out, boot = {}, {}
    for variant, rows in sorted(units.items()):
        point = _metrics(rows[None])[0]
        idx = rng.integers(len(rows), size=(resamples, len(rows)))
        boot[variant] = _metrics(rows[idx])
        lo, hi = np.nanpercentile(boot[variant], [2.5, 97.5], axis=0)
        total = rows.sum(0)
        out[variant] = {"units": len(rows), "requests": int(total[REQUESTS]), "exposures": int(total[EXPOSURES]),
                        "clicks": int(total[CLICKS]), "orders": int(total[ORDERS]),
                        **{m: {"value": float(point[i]), "ci95": [float(lo[i]), float(hi[i])]}
                           for i, m in enumerate(METRICS)}}
    for variant in out:
        for i, m in enumerate(METRICS):
            if variant == control:
                continue
            se = math.hypot(np.nanstd(boot[variant][:, i]), np.nanstd(boot[control][:, i]))
            diff = out[variant][m]["value"] - out[control][m]["value"]
            out[variant][m]["p_value_vs_control"] = _p_value(diff, se)
    comparisons = _comparisons(out, boot)
    return {"control": control, "unit": unit, "variants": out, "comparisons": comparisons,
            "ranking_by_orders_per_1k": _tiers(out, comparisons), "verdict": _verdict(comparisons),
            "sample_ratio": sample_ratio(out, weights)}


def _comparisons(out: dict, boot: dict) -> list[dict]:
    """Every pair of variants on orders per 1k requests, the better one first: the difference,
    its p-value, and the requests per variant a difference this size needs at 80% power."""
    i = METRICS.index("orders_per_1k")
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    rows = []
    for a, b in combinations(out, 2):
        if out[b]["orders_per_1k"]["value"] > out[a]["orders_per_1k"]["value"]:
            a, b = b, a
        diff = out[a]["orders_per_1k"]["value"] - out[b]["orders_per_1k"]["value"]
        se = math.hypot(np.nanstd(boot[a][:, i]), np.nanstd(boot[b][:, i]))
        p = _p_value(diff, se)
        requests = (out[a]["requests"] + out[b]["requests"]) / 2
        # the standard error shrinks with the square root of the sample: the size at which z x se = |diff|
        needed = math.ceil(requests * (z * se / diff) ** 2) if diff > 0 and se > 0 else None
        rows.append({"better": a, "worse": b, "difference": diff, "p_value": p, "significant": p < ALPHA,
                     "requests_per_variant_for_80pct_power": needed})
    return sorted(rows, key=lambda r: r["p_value"])


def _tiers(out: dict, comparisons: list[dict]) -> list[list[str]]:
    """Variants by orders per 1k requests, best first, in tiers: a variant opens a new tier only
    when it is significantly below every variant of the tier above."""
    significant = {(r["better"], r["worse"]) for r in comparisons if r["significant"]}
    tiers: list[list[str]] = []
    for v in sorted(out, key=lambda v: -out[v]["orders_per_1k"]["value"]):
        if tiers and all((above, v) in significant for above in tiers[-1]):
            tiers.append([v])
        elif tiers:
            tiers[-1].append(v)
        else:
            tiers.append([v])
    return tiers


def _verdict(comparisons: list[dict]) -> str:
    """What the orders per 1k requests say, in one sentence per finding."""
    if not comparisons:
        return "One variant only: nothing to compare."
    found = [f"{r['better']} > {r['worse']} (+{r['difference']:.2f} orders per 1k requests, p={r['p_value']:.3g})"
             for r in comparisons if r["significant"]]
    rest = [r for r in comparisons if not r["significant"]]
    lines = [f"Significant (p < {ALPHA:g}): " + "; ".join(found) + "."] if found else \
        [f"No difference in orders per 1k requests is significant (p >= {ALPHA:g} for every pair)."]
    if rest:
        largest = max(rest, key=lambda r: r["difference"])
        need = largest["requests_per_variant_for_80pct_power"]
        lines.append(f"Not significant: {', '.join(r['better'] + ' vs ' + r['worse'] for r in rest)}. "
                     + (f"The largest of these differences ({largest['better']} vs {largest['worse']}, "
                        f"{largest['difference']:+.2f}, p={largest['p_value']:.3g}) would need about {need:,} requests "
                        f"per variant to show at {POWER:.0%} power." if need else "The observed differences are 0."))
    return " ".join(lines)


def sample_ratio(out: dict, weights: dict[str, float] | None = None) -> dict:
    """Units per variant against the experiment's weights (equal when not given): the chi-square
    p-value, and a mismatch flag below p = 0.001."""
    names = list(out)
    observed = np.array([out[v]["units"] for v in names], np.float64)
    w = np.ones(len(names)) if not weights else \
        np.array([weights.get(v, np.mean(list(weights.values()))) for v in names], np.float64)
    expected = observed.sum() * w / w.sum()
    p = float(stats.chisquare(observed, expected).pvalue) if len(names) > 1 else 1.0
    return {"observed": dict(zip(names, observed.astype(int).tolist())),
            "expected": dict(zip(names, expected.round(1).tolist())), "p_value": p, "mismatch": p < SRM_ALPHA}


def markdown(report: dict) -> str:
    unit = report.get("unit", "request")
    head = f"| variant | {unit}s | requests | " + " | ".join(LABELS[m] for m in METRICS) + " |"
    lines = [f"# A/B report{' for ' + report['experiment'] if report.get('experiment') else ''} "
             f"(control: {report['control']})",
             "", head, "|---|---:|---:|" + "---:|" * len(METRICS)]
    for v, row in report["variants"].items():
        cells = []
        for m in METRICS:
            x = row[m]
            scale = 1 if m == "orders_per_1k" else 100
            p = f", p={x['p_value_vs_control']:.3g}" if "p_value_vs_control" in x else ""
            cells.append(f"{scale * x['value']:.2f} [{scale * x['ci95'][0]:.2f}, {scale * x['ci95'][1]:.2f}]{p}")
        lines.append(f"| {v} | {row['units']} | {row['requests']} | " + " | ".join(cells) + " |")
    tiers = " > ".join(t[0] if len(t) == 1 else "(" + " ~ ".join(t) + ")"
                       for t in report["ranking_by_orders_per_1k"])
    srm = report["sample_ratio"]
    lines += ["", f"CTRs and CVR in %, 95% bootstrap intervals over {unit}s (the randomization unit), p-values "
              "against the control.",
              f"Ranking by orders per thousand requests (~: not significantly different): {tiers}",
              report["verdict"],
              (f"SAMPLE-RATIO MISMATCH: {unit}s per variant {srm['observed']} against the expected {srm['expected']} "
               f"(chi-square p={srm['p_value']:.2g}): the split is suspect, and so is every comparison above."
               if srm["mismatch"] else f"Sample ratio as expected (chi-square p={srm['p_value']:.2g})."), ""]
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


def ab_report(settings, out_dir: Path, control: str, experiment: str | None = None, unit: str = "user",
              weights: dict[str, float] | None = None) -> tuple[Path, dict]:
    """The report of `experiment` (every event with a variant when None), its intervals over
    `unit` and its sample-ratio check against `weights` (see `experiment_design`)."""
    events = read_events(settings, experiment)
    if not events:
        raise ValueError(f"no events with a variant on {settings.kafka.events_topic}"
                         f"{' for experiment ' + experiment if experiment else ''}: run `onevision sim traffic` first")
    report = {"experiment": experiment, "events": len(events),
              **summarize(per_unit(events, unit), control, unit=unit, weights=weights)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ab.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "ab.md").write_text(markdown(report))
    plot(report, out_dir / "ab.png")
    return path, report


def experiment_design(config, key: str | None) -> tuple[str, dict[str, float] | None]:
    """(randomization unit, variant -> weight) of experiment `key` in an `ExperimentConfig`:
    what the report's intervals and sample-ratio check follow. Without a key: users, equal weights."""
    if key is None:
        return "user", None
    for layer in config.layers:
        for e in layer.experiments:
            if e.key == key:
                weights = e.weights or [1.0] * len(e.variants)
                return e.hash_attribute.removesuffix("_id"), dict(zip(e.variants, weights))
    raise ValueError(f"no experiment {key!r} in the experiment config")
