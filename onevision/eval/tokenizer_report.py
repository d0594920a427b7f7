"""The tokenizer comparison report: a table shaped like the paper's Table 4 plus our columns,
JSON beside it, and a PNG of codebook usage per level."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = (
    ("ICO", lambda m: f"{m['ICO']:.3f}"),
    ("QAS HR@4", lambda m: f"{100 * m['QAS']['HR@4']:.2f}" if "QAS" in m else "-"),
    ("QAS MRR@4", lambda m: f"{100 * m['QAS']['MRR@4']:.2f}" if "QAS" in m else "-"),
    ("ICR", lambda m: f"{100 * m['ICR']:.1f}"),
    ("CUR total", lambda m: f"{100 * m['CUR'][-1]:.3g}"),
    ("min usage", lambda m: f"{100 * min(m['usage']):.1f}"),
    ("view cons.@1", lambda m: f"{100 * m['view_consistency'][0]:.1f}" if "view_consistency" in m else "-"),
    ("view cons.@3", lambda m: f"{100 * m['view_consistency'][min(2, len(m['view_consistency']) - 1)]:.1f}"
                               if "view_consistency" in m else "-"),
    ("L1 purity", lambda m: f"{100 * m['category_purity_l1']:.1f}"),
    ("sizes", lambda m: "-".join(map(str, m["sizes"]))),
)


def markdown(results: dict[str, dict]) -> str:
    head = "| method | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(COLUMNS)]
    for method, m in results.items():
        lines.append(f"| {method} | " + " | ".join(fmt(m) for _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def usage_plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / max(len(results), 1)
    levels = max(len(m["usage"]) for m in results.values())
    panels = ((axes[0], "codes used (%)", "Codebook usage per level", lambda m: m["usage"]),
              (axes[1], "normalised entropy (%)", "Code balance per level",
               lambda m: [e["normalised"] for e in m["entropy"]]))
    for ax, ylabel, title, values in panels:
        for k, (method, m) in enumerate(results.items()):
            v = values(m)
            ax.bar([level + k * width for level in range(len(v))], [100 * u for u in v], width=width, label=method)
        ax.axhline(50, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("codebook level")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_xticks([level + 0.4 - width / 2 for level in range(levels)])
        ax.set_xticklabels([f"L{level + 1}" for level in range(levels)])
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_tokenizer_report(catalog_name: str, results: dict[str, dict], reports: Path) -> tuple[Path, str]:
    reports.mkdir(parents=True, exist_ok=True)
    path = reports / f"tokenizer_{catalog_name}.json"
    path.write_text(json.dumps({"catalog": catalog_name, "methods": results}, indent=2, sort_keys=True) + "\n")
    table = markdown(results)
    path.with_suffix(".md").write_text(f"# SID tokenizers on {catalog_name} (Table 4 and more)\n\n{table}\n\n"
                                       "ICO: items per distinct SID (lower is better). QAS: ANN over quantized "
                                       "embeddings, test photos vs items. ICR: items with a SID of their own. "
                                       "Percentages.\n")
    usage_plot(results, path.with_suffix(".png"))
    return path, table
