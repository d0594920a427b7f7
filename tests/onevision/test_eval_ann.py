import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog, write_table
from onevision.encoders import get_encoder
from onevision.eval.ann import evaluate_ann
from onevision_cli.main import app


def test_queries_that_are_catalog_images_are_found_first(tiny_world, tmp_path):
    """With each query photo replaced by its target's catalog image, pixels must find it at the top.

    Price-only variants share the exact catalog image, so the target ties with at most
    max_family_size - 1 twins: it must be within the first 4 and usually first."""
    root = tmp_path / "cat"
    shutil.copytree(tiny_world, root)
    items = pd.read_parquet(root / "items.parquet").set_index("item_id")
    q = pd.read_parquet(root / "queries.parquet")
    q["image"] = items.loc[q["target_item_id"], "image"].to_numpy()
    write_table(q, root / "queries.parquet")
    res = evaluate_ann(load_catalog(root), get_encoder("pixels"), progress=False)
    assert res["sets"]["all"]["HR@4"] == pytest.approx(1.0)
    assert res["sets"]["all"]["HR@1"] > 0.6
    assert res["sets"]["click"]["n"] + res["sets"]["order"]["n"] == res["sets"]["all"]["n"]


def test_cli_writes_json_and_table_merging_encoders(tiny_world, tmp_path):
    runner = CliRunner()
    for enc in ("pixels", "efficientnet"):
        r = runner.invoke(app, ["eval", "ann", "--catalog", str(tiny_world), "--encoder", enc,
                                "--reports", str(tmp_path)])
        assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "eval_ann_tiny.json").read_text())
    assert set(report["encoders"]) == {"pixels", "efficientnet"}
    for res in report["encoders"].values():
        for name in ("click", "order", "all"):
            m = res["sets"][name]
            assert 0.0 <= m["HR@1"] <= m["HR@4"] <= m["HR@10"] <= 1.0
            assert m["MRR@4"] <= m["HR@4"]
    table = (tmp_path / "eval_ann_tiny.md").read_text()
    assert "| efficientnet | order |" in table and "| pixels | click |" in table


def test_empty_split_is_a_clear_error(tiny_world):
    c = load_catalog(tiny_world)
    c.queries = c.queries[c.queries["split"] != "test"]
    with pytest.raises(ValueError, match="no queries in split 'test'"):
        evaluate_ann(c, get_encoder("pixels"), progress=False)
