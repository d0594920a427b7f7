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
    exposures, clicks, orders, requests with a click and requests with an order. A request
    belongs to the user its exposures name (an order may be reported by another caller)."""
    if unit not in UNITS:
        raise ValueError(f"unknown randomization unit {unit!r}; one of {', '.join(UNITS)}")
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    owner: dict[tuple[str, str], str] = {}
    column = {"exposure": 0, "click": 1, "order": 2}
    for e in events:
        if e.get("type") in column and e.get("request_id"):
            key = e["variant"], e["request_id"]
            counts[key][column[e["type"]]] += 1
            if e.get("user_id") and (key not in owner or e["type"] == "exposure"):
                owner[key] = str(e["user_id"])
    units: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(6))
    for (variant, request), (exposures, clicks, orders) in counts.items():
        who = owner.get((variant, request), "request:" + request) if unit == "user" else request
        units[variant, who] += (1, exposures, clicks, orders, clicks > 0, orders > 0)
    out: dict[str, list] = defaultdict(list)
    for (variant, _), row in units.items():
        out[variant].append(row)
    return {v: np.asarray(rows, np.float64) for v, rows in out.items()}


def _ratios(totals: np.ndarray) -> np.ndarray:
    """(..., 6) summed unit rows -> (..., 4) metrics."""
    t = totals
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([t[..., CLICKS] / t[..., EXPOSURES], t[..., CLICKED] / t[..., REQUESTS],
                         t[..., ORDERED] / t[..., CLICKED], 1000 * t[..., ORDERS] / t[..., REQUESTS]], -1)


def _bootstrap(rows: np.ndarray, rng: np.random.Generator, resamples: int, chunk: int = 100) -> np.ndarray:
    """(resamples, 4) metrics of units drawn with replacement, a chunk of resamples at a time as
    multinomial counts (memory: chunk x units, whatever the number of resamples)."""
    n = len(rows)
    out = []
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, resamples - start))
        out.append(_ratios(counts @ rows))
    return np.concatenate(out)


def _se(*boots: np.ndarray) -> float | None:
    """The standard error of a difference of independent arms' estimates (a single arm's with one),
    None when the resamples hardly vary (too few units to tell)."""
    se = math.sqrt(sum(float(np.nanvar(b)) for b in boots))
    return se if se > 1e-9 else None


def _p_value(diff: float, se: float | None) -> float | None:
    return None if se is None else float(math.erfc(abs(diff / se) / math.sqrt(2)))


def summarize(units: dict[str, np.ndarray], control: str, unit: str = "user", weights: dict[str, float] | None = None,
              resamples: int = 2000, seed: int = 0) -> dict:
    """The report's numbers from `per_unit`'s rows; `weights`: the share of units the experiment
    sends each variant (`experiment_design`), for the sample-ratio check (not checked without)."""
    if control not in units:
        raise ValueError(f"control variant {control!r} has no requests; variants seen: {sorted(units)}")
    rng = np.random.default_rng(seed)
    out, boot = {}, {}
    for variant, rows in sorted(units.items()):
        total = rows.sum(0)
        point = _ratios(total)
        boot[variant] = _bootstrap(rows, rng, resamples)
        lo, hi = np.nanpercentile(boot[variant], [2.5, 97.5], axis=0)
        out[variant] = {"units": len(rows), "requests": int(total[REQUESTS]), "exposures": int(total[EXPOSURES]),
                        "clicks": int(total[CLICKS]), "orders": int(total[ORDERS]),
                        **{m: {"value": float(point[i]), "ci95": [float(lo[i]), float(hi[i])]}
                           for i, m in enumerate(METRICS)}}
    for variant in out:
        for i, m in enumerate(METRICS):
            if variant == control:
                continue
            diff = out[variant][m]["value"] - out[control][m]["value"]
            out[variant][m]["p_value_vs_control"] = _p_value(diff, _se(boot[variant][:, i], boot[control][:, i]))
    comparisons = _comparisons(out, boot)
    return {"control": control, "unit": unit, "variants": out, "comparisons": comparisons,
            "ranking_by_orders_per_1k": _tiers(out, comparisons), "verdict": _verdict(comparisons, unit),
            "sample_ratio": sample_ratio(out, weights)}


def _comparisons(out: dict, boot: dict) -> list[dict]:
    """Every pair of variants on orders per 1k requests, the better one first: the difference, its
    p-value and Holm's adjustment over the pairs (what `significant` reads), the smallest
    difference this sample shows at 80% power (`detectable`), and the units per variant the
    observed difference would need (the standard error shrinks with the square root of the units;
    a balanced design)."""
    i = METRICS.index("orders_per_1k")
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    rows = []
    for a, b in combinations(out, 2):
        if out[b]["orders_per_1k"]["value"] > out[a]["orders_per_1k"]["value"]:
            a, b = b, a
        diff = out[a]["orders_per_1k"]["value"] - out[b]["orders_per_1k"]["value"]
        se = _se(boot[a][:, i], boot[b][:, i])
        # the sample's effective units per arm: the harmonic mean, exact for equal variances at any split
        units = 2 / (1 / out[a]["units"] + 1 / out[b]["units"])
        rows.append({"better": a, "worse": b, "difference": diff, "p_value": _p_value(diff, se),
                     "detectable": None if se is None else z * se,
                     "units_per_variant_for_80pct_power": math.ceil(units * (z * se / diff) ** 2)
                     if se is not None and diff > 0 else None})
    ranked = sorted(rows, key=lambda r: (r["p_value"] is None, r["p_value"] or 0.0))
    held = 0.0
    for k, r in enumerate(ranked):  # Holm: the k-th smallest p times the pairs left, never below the one before
        if r["p_value"] is not None:
            held = max(held, min(1.0, (len(ranked) - k) * r["p_value"]))
        r["p_holm"] = None if r["p_value"] is None else held
        r["significant"] = r["p_holm"] is not None and r["p_holm"] < ALPHA
    return ranked


def _tiers(out: dict, comparisons: list[dict]) -> list[list[str]]:
    """Variants by orders per 1k requests, best first, in tiers such that every variant of a tier
    is significantly above every variant of each later tier; variants that cannot be ordered so
    share a tier."""
    significant = {(r["better"], r["worse"]) for r in comparisons if r["significant"]}
    tiers: list[list[str]] = []
    for v in sorted(out, key=lambda v: -out[v]["orders_per_1k"]["value"]):
        if not tiers or all((u, v) in significant for t in tiers for u in t):
            tiers.append([v])
            continue
        tiers[-1].append(v)
        while len(tiers) > 1 and not all((u, w) in significant for t in tiers[:-1] for u in t for w in tiers[-1]):
            last = tiers.pop()
            tiers[-1] += last
    return tiers


def _verdict(comparisons: list[dict], unit: str) -> str:
    """What the orders per 1k requests say, in a sentence per finding."""
    if not comparisons:
        return "One variant only: nothing to compare."
    found = [f"{r['better']} > {r['worse']} (+{r['difference']:.2f} orders per 1k requests, p={r['p_value']:.3g}, "
             f"Holm {r['p_holm']:.3g})" for r in comparisons if r["significant"]]
    rest = [r for r in comparisons if not r["significant"]]
    lines = [f"Significant (p < {ALPHA:g} after Holm's adjustment over {len(comparisons)} pairs): "
             + "; ".join(found) + "."] if found else \
        [f"No difference in orders per 1k requests is significant at p < {ALPHA:g} after Holm's adjustment over "
         f"{len(comparisons)} pairs."]
    if rest:
        lines.append(f"Not significant: {', '.join(r['better'] + ' vs ' + r['worse'] for r in rest)}.")
        sized = [r for r in rest if r["units_per_variant_for_80pct_power"]]
        if sized:
            largest = max(sized, key=lambda r: r["difference"])
            lines.append(f"At this sample only a difference above {largest['detectable']:.1f} orders per 1k requests "
                         f"({largest['better']} vs {largest['worse']}) would show at {POWER:.0%} power; the observed "
                         f"{largest['difference']:+.2f} (p={largest['p_value']:.3g}), if it is real, would need about "
                         f"{largest['units_per_variant_for_80pct_power']:,} {unit}s per variant (the largest observed "
                         "difference overstates a true one, so read this as a lower bound).")
        else:
            lines.append("Too few units to estimate the error of these differences.")
    return " ".join(lines)


def sample_ratio(out: dict, weights: dict[str, float] | None) -> dict:
    """Units per variant against the experiment's weights: the chi-square p-value and a mismatch
    flag below p = 0.001, or a variant the design does not have. Without weights, not checked."""
    if not weights:
        return {"checked": False}
    names = sorted(set(weights) | set(out))
    unexpected = sorted(set(out) - set(weights))
    observed = np.array([out[v]["units"] if v in out else 0 for v in names], np.float64)
    w = np.array([weights.get(v, 0.0) for v in names], np.float64)
    known = w > 0
    expected = np.zeros(len(names))
    expected[known] = observed[known].sum() * w[known] / w[known].sum()
    p = float(stats.chisquare(observed[known], expected[known]).pvalue) if known.sum() > 1 else 1.0
    return {"checked": True, "observed": dict(zip(names, observed.astype(int).tolist())),
            "expected": dict(zip(names, expected.round(1).tolist())), "p_value": p, "unexpected": unexpected,
            "mismatch": p < SRM_ALPHA or bool(unexpected)}


def markdown(report: dict) -> str:
    unit = report.get("unit", "request")
    units_col = unit != "request"  # per-request units are the requests column
    head = "| variant | " + (f"{unit}s | " if units_col else "") + "requests | " + \
        " | ".join(LABELS[m] for m in METRICS) + " |"
    lines = [f"# A/B report{' for ' + report['experiment'] if report.get('experiment') else ''} "
             f"(control: {report['control']})",
             "", head, "|---|" + "---:|" * (len(METRICS) + 1 + units_col)]
    for v, row in report["variants"].items():
        cells = []
        for m in METRICS:
            x = row[m]
            scale = 1 if m == "orders_per_1k" else 100
            p = ""
            if "p_value_vs_control" in x:
                p = ", p=n/a" if x["p_value_vs_control"] is None else f", p={x['p_value_vs_control']:.3g}"
            cells.append(f"{scale * x['value']:.2f} [{scale * x['ci95'][0]:.2f}, {scale * x['ci95'][1]:.2f}]{p}")
        lines.append(f"| {v} | " + (f"{row['units']} | " if units_col else "") + f"{row['requests']} | "
                     + " | ".join(cells) + " |")
    tiers = " > ".join(t[0] if len(t) == 1 else "(" + ", ".join(t) + ")" for t in report["ranking_by_orders_per_1k"])
    srm = report["sample_ratio"]
    if not srm.get("checked"):
        ratio = "Sample ratio not checked: no experiment design given."
    elif srm["mismatch"]:
        extra = f"; variants the design does not have: {srm['unexpected']}" if srm["unexpected"] else ""
        ratio = (f"SAMPLE-RATIO MISMATCH: {unit}s per variant {srm['observed']} against the expected {srm['expected']} "
                 f"(chi-square p={srm['p_value']:.2g}{extra}): the split is suspect, and so is every comparison above.")
    else:
        ratio = f"Sample ratio as expected (chi-square p={srm['p_value']:.2g})."
    lines += ["", f"CTRs and CVR in %, 95% bootstrap intervals over {unit}s (the randomization unit), p-values "
              "against the control.",
              f"Ranking by orders per thousand requests (in parentheses: variants that could not be ordered; each "
              f"is significantly above every variant after its group): {tiers}",
              report["verdict"], ratio, ""]
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


def experiment_design(config, key: str | None) -> tuple[str | None, str, dict[str, float] | None]:
    """(experiment key, randomization unit, variant -> share of the experiment's units) of
    experiment `key` in an `ExperimentConfig` (without a key: the config's only experiment), the
    shares as the router buckets them (`experiments.get_bucket_ranges`: weights it would not
    accept count as equal). What the report's events, intervals and sample-ratio check follow.
    With no key and not exactly one experiment: (None, users, no shares; the check is skipped)."""
    from serving.experiments import get_bucket_ranges

    experiments = [e for layer in config.layers for e in layer.experiments]
    if key is None and len(experiments) == 1:
        key = experiments[0].key
    if key is None:
        return None, "user", None
    for e in experiments:
        if e.key == key:
            widths = [end - start for start, end in get_bucket_ranges(len(e.variants), 1.0, e.weights)]
            return key, e.hash_attribute.removesuffix("_id"), dict(zip(e.variants, widths))
    raise ValueError(f"no experiment {key!r} in the experiment config")
