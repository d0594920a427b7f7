"""`onevision eval offline`: every method through one evaluation, shaped like OneVision's
Tables 1 and 2, on the test split's CLICK and ORDER sets.

Methods (trained beforehand by `training.offline_models`, which reuses what the registry has):
- ANN: the aligned encoder V + exact faiss search (the DINOv3 row);
- MCA: ANN recall, pre-rank, learned ranker with user features and item stats; MCA w/o ranking;
- RQ-KMeans GR: the generator on RQ-KMeans SIDs, single-stage SFT from the image alone, ranked by
  its log-probabilities as IRGen ranks (the paper's baseline), and with OneVision's similarity search;
- OneVision: VRQ SIDs, pretrain -> SFT -> personalized SFT -> DPO, with and without the user's
  features at inference (w/ P. / w/o P.), in pure beam order (without the similarity search of
  `generator.rank.searcher`), and without the beam's similarity look-ahead (`generator.decode.lookahead`);
- ablations (Table 2): trained without user SIDs (pretrain -> SFT), on VRQ without business
  features, on VRQ without category features.
Writes `reports/offline_<catalog>.json` and `.md`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onevision.ann import search
from onevision.baselines.mca import UserArrays, load_mca
from onevision.catalog.format import Catalog
from onevision.eval.generative import evaluate_generator, searcher_for, set_metrics
from onevision.generator.data import GeneratorData, load_generator_data
from onevision.generator.model import OneVisionGenerator
from onevision.metrics.retrieval import DEFAULT_CUTOFFS
from onevision.registry import read_version, resolve_ref

ANN = "ANN (aligned V + faiss)"
IRGEN = "RQ-KMeans GR (IRGen-like: single-stage, beam order)"
RQK_SEARCHED = "RQ-KMeans GR (single-stage) + our similarity search"
OURS = "OneVision (VRQ) w/ P."
BEAM_ORDER = {"similarity_weight": 0.0, "price_weight": 0.0}  # SIDs in beam order, items by S_conv inside each


def offline_report(catalog: Catalog, models, cache: Path, reports: Path, beam: int = 10, progress: bool = True,
                   log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """Score the models of `models` (`training.offline_models.OfflineModels`: registry versions by
    role, trained by that recipe) and write the report."""
    t0 = time.perf_counter()
    datas: dict[tuple, GeneratorData] = {}

    def data_for(tokenizer: Path, config: dict | None = None) -> GeneratorData:
        mode, hints = (config["image_sid"], config["tokens"]["n_hints"]) if config else ("tokenizer", 1)
        if (tokenizer, mode, hints) not in datas:
            datas[tokenizer, mode, hints] = load_generator_data(catalog, tokenizer, cache, progress=progress,
                                                                 image_sid=mode, hints=hints)
        return datas[tokenizer, mode, hints]

    data = data_for(models.vrq)
    test, q = data.evaluation("test")
    kinds, targets = q["kind"].to_numpy(), test.targets
    emb = data.bank.tokens.embedding
    item_emb, query_emb = emb[data.bank.rows(catalog.items["image"])], emb[test.image]
    rows: dict[str, dict] = {}

    def record(name: str, ranked: np.ndarray, **extra) -> None:
        rows[name] = {"sets": set_metrics(ranked, targets, kinds), **extra}
        m = rows[name]["sets"]
        log(f"  {name:<34} " + "  ".join(f"{s.upper()} HR@4 {100 * m[s]['HR@4']:.2f}" for s in ("click", "order")
                                          if "HR@4" in m[s]))

    record(ANN, search(item_emb, query_emb, 10))

    mca, manifest = load_mca(models.mca, catalog.items)
    ctx = data.context(q)
    users = UserArrays(ctx.short_items, ctx.long_items)
    as_of = dict(as_of=catalog.stats, ts=test.ts)  # item stats known at each query's time
    record("MCA", mca.rank(query_emb, users, **as_of), ranker=manifest["metrics"])
    record("MCA w/o P.", mca.rank(query_emb, None, **as_of))
    record("MCA w/o ranking", mca.rank(query_emb, None, ranking=False, **as_of))

    def generator_rows(label: str, version: Path, both: bool, extra: dict[str, dict] | None = None) -> None:
        """The model's rows: `label` (w/ and w/o P. when `both`) with the served search, and each
        `extra` row's name with those searcher options (with the user's features when `both`)."""
        model = OneVisionGenerator.load(version)
        config = read_version(version)[1]
        d = data_for(resolve_ref(config["tokenizer"], version), config)
        ex, _ = d.evaluation("test")
        for personalized in ((True, False) if both else (False,)):
            res = evaluate_generator(model, d, ex, kinds, beam=beam, personalized=personalized)
            suffix = (" w/ P." if personalized else " w/o P.") if both else ""
            record(label + suffix, res["ranked"], version=str(version), all_sids_valid=res["all_sids_valid"],
                   low_confidence_share=res["low_confidence_share"])
        for row, options in (extra or {}).items():
            res = evaluate_generator(model, d, ex, kinds, beam=beam, personalized=both,
                                     searcher=searcher_for(model, d, **options))
            record(row, res["ranked"], version=str(version), all_sids_valid=res["all_sids_valid"])

    # IRGen-like: the image alone, single-stage SFT, ranked by the decoder's log-probabilities
    generator_rows(RQK_SEARCHED, models.rq_kmeans_single, both=False, extra={IRGEN: BEAM_ORDER})
    generator_rows("OneVision (VRQ)", models.onevision, both=True,
                   extra={"OneVision (VRQ) w/ P., beam order": BEAM_ORDER,
                          "OneVision (VRQ) w/ P., no look-ahead": {"lookahead": False}})
    table2 = [OURS]
    for label, version in models.ablations.items():
        generator_rows(label, version, both=False)
        table2.append(label)
    table2 += ["MCA", "MCA w/o ranking"]
    table1 = [r for r in rows if r not in models.ablations]
    report = {"catalog": catalog.name, "catalog_path": str(catalog.root.resolve()), "split": "test", "beam": beam,
              "n_queries": {k: int((kinds == k).sum()) for k in ("click", "order")}, "methods": rows,
              "table1": table1, "table2": [r for r in table2 if r in rows], "comparisons": comparisons(rows),
              "seconds": round(time.perf_counter() - t0, 1)}
    reports.mkdir(parents=True, exist_ok=True)
    path = reports / f"offline_{catalog.name}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    path.with_suffix(".md").write_text(markdown(report))
    plot(report, path.with_suffix(".png"))
    return path, report


def plot(report: dict, path: Path) -> None:
    """HR@1 and HR@4 of every Table 1 method, per query set the catalog has: the PNG beside the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in ("click", "order") if report["n_queries"][s]]
    names = report["table1"]
    if not sets or not names:
        return
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 0.42 * len(names) + 1.6), squeeze=False)
    y = np.arange(len(names))
    for ax, s in zip(axes[0], sets):
        for k, (metric, colour) in enumerate((("HR@4", "#9ecae1"), ("HR@1", "#3182bd"))):
            vals = [100 * report["methods"][n]["sets"][s][metric] for n in names]
            ax.barh(y + (0.2 if k else -0.2), vals, height=0.4, color=colour, label=metric)
            for yy, v in zip(y + (0.2 if k else -0.2), vals):
                ax.text(v + 0.5, yy, f"{v:.1f}", va="center", fontsize=7)
        ax.set(yticks=y, yticklabels=names if ax is axes[0][0] else [], xlim=(0, 110),
               title=f"{s.upper()} ({report['n_queries'][s]} test photos)", xlabel="%")
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Offline evaluation on {report['catalog']} (beam {report['beam']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# (other method, query set, metric, points OneVision w/ P. must lead by): the generator issue's acceptance
# lines; the RQ-KMeans generator given our similarity search is shown beside its IRGen-like ranking
COMPARISONS = [*((ANN, s, m, 0.0) for s in ("click", "order") for m in ("HR@4", "MRR@10")),
               *((IRGEN, s, "HR@4", 5.0) for s in ("click", "order")),
               *((RQK_SEARCHED, s, "HR@4", 5.0) for s in ("click", "order")),
               ("OneVision (VRQ) w/o P.", "order", "HR@1", 2.0)]


def comparisons(rows: dict) -> list[dict]:
    """OneVision w/ P. against each row of `COMPARISONS` present: both values in points, the lead
    and whether it reaches the required lead."""
    out = []
    for other, query_set, metric, lead in COMPARISONS:
        if OURS in rows and other in rows and metric in rows[OURS]["sets"][query_set]:
            ours, theirs = (100 * rows[r]["sets"][query_set][metric] for r in (OURS, other))
            out.append({"versus": other, "set": query_set, "metric": metric, "ours": round(ours, 2),
                        "theirs": round(theirs, 2), "lead": round(ours - theirs, 2), "required": lead,
                        "holds": bool(ours - theirs >= lead - 1e-9)})
    return out


def markdown(report: dict) -> str:
    cols = [f"{m}@{k}" for m, k in DEFAULT_CUTOFFS]

    n = report["n_queries"]
    sets = [s for s in ("click", "order") if n[s]]  # a catalog reports the query sets it has

    def table(names: list[str]) -> list[str]:
        head = "| method | " + " | ".join(f"{s.upper()} {c}" for s in sets for c in cols) + " |"
        lines = [head, "|---|" + "---:|" * (len(sets) * len(cols))]
        for name in names:
            m = report["methods"][name]["sets"]
            vals = [f"{100 * m[s][c]:.2f}" for s in sets for c in cols]
            lines.append(f"| {name} | " + " | ".join(vals) + " |")
        return lines

    return "\n".join([f"# Offline evaluation on {report['catalog']} (test split: "
                      + ", ".join(f"{s.upper()} {n[s]}" for s in sets)
                      + f" shopper photos; beam {report['beam']})", "", "## Table 1: methods", "",
                      *table(report["table1"]), "", "## Table 2: ablations", "", *table(report["table2"]), "",
                      f"## {OURS} against", "", "| versus | set | metric | ours | theirs | lead | required | holds |",
                      "|---|---|---|---:|---:|---:|---:|---|",
                      *(f"| {c['versus']} | {c['set'].upper()} | {c['metric']} | {c['ours']:.2f} | {c['theirs']:.2f} | "
                        f"{c['lead']:+.2f} | {c['required']:+.1f} | {'yes' if c['holds'] else 'no'} |"
                        for c in report.get("comparisons", [])), ""])
