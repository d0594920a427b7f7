"""ANN baseline evaluation: embed catalog and query images, search with faiss, score HR/MRR.

Results go to `reports/eval_ann_<catalog>.json`, one entry per encoder (re-running one
encoder keeps the others), plus a Markdown table beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from onevision.ann import search
from onevision.catalog.format import Catalog
from onevision.encoders.base import ImageEncoder
from onevision.metrics.retrieval import DEFAULT_CUTOFFS, padded_targets, retrieval_metrics

QUERY_SETS = ("click", "order", "all")


def evaluate_ann(catalog: Catalog, encoder: ImageEncoder, split: str = "test", k: int = 10,
                 progress: bool = True) -> dict:
    """Metrics per query set (click, order, all) of ANN retrieval with `encoder` on `split`."""
    queries = catalog.queries if split == "all" else catalog.queries[catalog.queries["split"] == split]
    if queries.empty:
        raise ValueError(f"catalog {catalog.name} has no queries in split {split!r}")
    t0 = time.perf_counter()
    item_vecs = encoder.encode_files(catalog.item_images(), desc=f"{encoder.name}: catalog", progress=progress)
    query_vecs = encoder.encode_files([catalog.path(p) for p in queries["image"]], desc=f"{encoder.name}: queries",
                                      progress=progress)
    encode_s = time.perf_counter() - t0
    ranked = search(item_vecs, query_vecs, k)
    index_of = {item_id: i for i, item_id in enumerate(catalog.items["item_id"])}
    targets = padded_targets([index_of[t] for t in accepted] for accepted in queries["target_item_ids"])
    sets = {}
    for name in QUERY_SETS:
        mask = np.ones(len(queries), bool) if name == "all" else (queries["kind"] == name).to_numpy()
        sets[name] = {"n": int(mask.sum()), **(retrieval_metrics(ranked[mask], targets[mask]) if mask.any() else {})}
    return {
        "encoder": encoder.name, "split": split, "n_items": len(catalog.items), "n_queries": len(queries),
        "encode_seconds": round(encode_s, 2),
        "images_per_second": round((len(item_vecs) + len(query_vecs)) / encode_s, 1),
        "sets": sets,
    }


def write_report(catalog: Catalog, result: dict, reports_dir: str | Path = "reports") -> tuple[Path, str]:
    """Merge `result` into reports/eval_ann_<catalog>.json and write the Markdown table; return (path, table)."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"eval_ann_{catalog.name}.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    if report.get("catalog_path") != str(catalog.root.resolve()):
        report = {"catalog": catalog.name, "catalog_path": str(catalog.root.resolve()), "encoders": {}}
    report["encoders"][result["encoder"]] = result
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    table = markdown_table(report)
    path.with_suffix(".md").write_text(f"# ANN baseline on {catalog.name}\n\n{table}\n")
    return path, table


def markdown_table(report: dict) -> str:
    """One row per encoder and query set, columns HR@1/4/10 and MRR@4/10."""
    cols = [f"{m}@{k}" for m, k in DEFAULT_CUTOFFS]
    lines = ["| encoder | set | n | " + " | ".join(cols) + " |", "|---|---|---:|" + "---:|" * len(cols)]
    for name, res in sorted(report["encoders"].items()):
        for set_name, m in res["sets"].items():
            vals = " | ".join(f"{100 * m[c]:.2f}" if c in m else "-" for c in cols)
            lines.append(f"| {name} | {set_name} | {m['n']} | {vals} |")
    return "\n".join(lines)
