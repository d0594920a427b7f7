"""`onevision eval offline` on the tiny world: every method of Tables 1 and 2 scored on the same
CLICK and ORDER sets, written as JSON and Markdown."""

import json
import shutil

from typer.testing import CliRunner

from onevision_cli.main import app


def test_offline_report_has_every_method_and_both_tables(tiny_world, tiny_tokenizers, tiny_generator, tmp_path):
    registry, cache, _ = tiny_tokenizers
    reg = tmp_path / "registry"
    shutil.copytree(registry, reg)  # the ablations add models; keep the shared registry as it was
    result = CliRunner().invoke(app, ["eval", "offline", "--catalog", str(tiny_world), "--preset", "tiny",
                                      "--registry", str(reg), "--cache", str(cache), "--runs", str(tmp_path / "runs"),
                                      "--reports", str(tmp_path / "reports")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "reports" / "offline_tiny.json").read_text())
    want = {"ANN (aligned V + faiss)", "MCA", "MCA w/o P.", "MCA w/o ranking",
            "RQ-KMeans GR (single-stage) + our similarity search",
            "RQ-KMeans GR (IRGen-like: single-stage, beam order)",
            "OneVision (VRQ) w/ P.", "OneVision (VRQ) w/o P.", "OneVision w/o user SIDs",
            "OneVision w/o business features", "OneVision w/o category features",
            "OneVision (VRQ) w/ P., beam order", "OneVision (VRQ) w/ P., no look-ahead"}
    assert set(report["methods"]) == want
    assert set(report["table1"]) | set(report["table2"]) == want
    n = report["n_queries"]
    for name, row in report["methods"].items():
        assert row["sets"]["click"]["n"] == n["click"] and row["sets"]["order"]["n"] == n["order"]
        assert all(0 <= row["sets"][s][m] <= 1 for s in ("click", "order") for m in ("HR@1", "HR@4", "MRR@10"))
        assert row["sets"]["all"]["HR@1"] <= row["sets"]["all"]["HR@4"] <= row["sets"]["all"]["HR@10"]
        if "version" in row:
            assert row["all_sids_valid"], name
    # the VRQ generator trained by the shared fixture is reused, not retrained
    assert report["methods"]["OneVision (VRQ) w/ P."]["version"].endswith("generator-vrq-tiny/v0001")
    md = (tmp_path / "reports" / "offline_tiny.md").read_text()
    assert "## Table 1" in md and "## Table 2" in md and "| MCA w/o ranking |" in md
    # each acceptance comparison, recomputed from the rows it names
    assert len(report["comparisons"]) == 9
    for c in report["comparisons"]:
        ours = 100 * report["methods"]["OneVision (VRQ) w/ P."]["sets"][c["set"]][c["metric"]]
        theirs = 100 * report["methods"][c["versus"]]["sets"][c["set"]][c["metric"]]
        assert abs(c["lead"] - (ours - theirs)) < 0.01 and c["holds"] == (ours - theirs >= c["required"] - 1e-6)
        assert f"| {c['versus']} | {c['set'].upper()} | {c['metric']} |" in md
