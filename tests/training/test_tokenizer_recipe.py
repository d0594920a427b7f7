"""End to end on the tiny world: align V, train tokenizers, report, encode new items, refuse bad artifacts."""

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog
from onevision.registry import RegistryError, load_version, resolve
from onevision.tokenizers import TokenizerError, load_tokenizer
from onevision_cli.main import app


@pytest.fixture(scope="module")
def trained(tiny_tokenizers):
    registry, _, reports = tiny_tokenizers
    return registry, reports


def test_report_has_every_metric_and_a_plot(trained):
    registry, reports = trained
    report = json.loads((reports / "tokenizer_tiny.json").read_text())
    assert set(report["methods"]) == {"vrq", "rq-kmeans"}
    vrq = report["methods"]["vrq"]
    assert len(vrq["sizes"]) == 5 and len(vrq["usage"]) == 5 and len(vrq["view_consistency"]) == 5
    assert 1.0 <= vrq["ICO"] and 0 <= vrq["ICR"] <= 1 and 0 <= vrq["QAS"]["HR@4"] <= 1
    assert (reports / "tokenizer_tiny.png").stat().st_size > 1000
    assert "| vrq |" in (reports / "tokenizer_tiny.md").read_text()


def test_artifact_holds_valid_item_sids(trained, tiny_world):
    registry, _ = trained
    version = resolve(registry / "tokenizer-vrq-tiny")
    manifest, config = load_version(version)
    sids = pd.read_parquet(version / "item_sids.parquet")
    items = load_catalog(tiny_world).items
    assert sids["item_id"].tolist() == items["item_id"].tolist()
    sizes = config["tokenizer"]["sizes"]
    assert all(len(s) == 5 and all(0 <= c < k for c, k in zip(s, sizes)) for s in sids["sid"])
    assert manifest["metrics"]["ICO"] >= 1.0 and config["encoder"].endswith("v0001")


def test_new_items_are_encoded_without_retraining(trained, tiny_world, tmp_path):
    registry, _ = trained
    version = resolve(registry / "tokenizer-vrq-tiny")
    out = tmp_path / "new_sids.parquet"
    r = CliRunner().invoke(app, ["tokenizer", "encode", "--tokenizer", str(version), "--catalog", str(tiny_world),
                                 "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    fresh = pd.read_parquet(out)
    stored = pd.read_parquet(version / "item_sids.parquet")
    assert [list(s) for s in fresh["sid"]] == [list(s) for s in stored["sid"]]  # same items -> same SIDs


def test_corrupt_or_mismatched_artifacts_are_refused(trained, tmp_path):
    registry, _ = trained
    good = resolve(registry / "tokenizer-vrq-tiny")
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "tokenizer.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TokenizerError, match="does not match its sha256"):
        load_tokenizer(bad)
    shutil.rmtree(bad)
    shutil.copytree(good, bad)
    (bad / "tokenizer.safetensors").unlink()
    with pytest.raises(TokenizerError, match="tokenizer.safetensors is missing"):
        load_tokenizer(bad)
    with pytest.raises(RegistryError, match="not a registry version"):
        resolve(tmp_path / "nothing")
    # a config that promises other codebook sizes than the weights hold
    shutil.rmtree(bad)
    shutil.copytree(good, bad)
    config = json.loads((bad / "config.json").read_text())
    config["tokenizer"]["sizes"] = [k * 2 for k in config["tokenizer"]["sizes"]]
    (bad / "config.json").write_text(json.dumps(config))
    manifest = json.loads((bad / "manifest.json").read_text())
    from onevision.registry import _sha256

    manifest["files"]["config.json"] = _sha256(bad / "config.json")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenizerError, match="config implies"):
        load_tokenizer(bad)


def test_cli_error_for_a_bad_tokenizer_path(tiny_world, tmp_path):
    r = CliRunner().invoke(app, ["tokenizer", "encode", "--tokenizer", str(tmp_path), "--catalog", str(tiny_world),
                                 "--out", str(tmp_path / "x.parquet")])
    assert r.exit_code == 2 and "not a registry version" in r.output
