"""The catalog format: a valid catalog loads, each kind of damage gets one clear error line."""

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from onevision.catalog.format import CatalogError, load_catalog, write_table
from onevision_cli.main import app


@pytest.fixture
def catalog_copy(tiny_world, tmp_path):
    dst = tmp_path / "cat"
    shutil.copytree(tiny_world, dst)
    return dst


def test_tiny_world_is_a_valid_catalog(tiny_world):
    c = load_catalog(tiny_world)
    assert len(c.items) == 120
    assert c.items["item_id"].is_unique
    assert set(c.queries["kind"]) == {"click", "order"}
    assert set(c.queries["split"]) == {"train", "val", "test"}
    assert set(c.events["type"]) == {"exposure", "click", "order"}
    assert c.users is not None and len(c.users) == 60


def _edit(root, name, fn):
    df = pd.read_parquet(root / name)
    write_table(fn(df), root / name)


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("items.parquet", lambda d: d.drop(columns=["category"]), "items.parquet is missing column 'category'"),
        ("items.parquet", lambda d: pd.concat([d, d.iloc[:1]]), "duplicate item_id"),
        ("items.parquet", lambda d: d.assign(price="cheap"), "column 'price' must be number"),
        ("items.parquet", lambda d: d.assign(price=-d["price"]), "negative price"),
        ("queries.parquet", lambda d: d.assign(kind="view"), "column 'kind' has value 'view'"),
        ("queries.parquet", lambda d: d.assign(target_item_id="nope"), "targets unknown item 'nope'"),
        ("queries.parquet", lambda d: d.assign(user_id=None), "column 'user_id' is empty in row 0"),
        ("events.parquet", lambda d: d.assign(type="like"), "column 'type' has value 'like'"),
        ("events.parquet", lambda d: d.drop(columns=["ts"]), "events.parquet is missing column 'ts'"),
        ("events.parquet", lambda d: d.assign(price=-1.0), "events.parquet has a negative price"),
        ("queries.parquet", lambda d: d.assign(target_item_ids=[["nope"]] * len(d)), "must start with"),
        ("queries.parquet", lambda d: d.assign(target_item_ids=[[t, "nope"] for t in d["target_item_id"]]),
         "accepts unknown item 'nope'"),
    ],
)
def test_damaged_tables_are_named(catalog_copy, name, damage, message):
    _edit(catalog_copy, name, damage)
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_catalog(catalog_copy)


def test_missing_image_is_named(catalog_copy):
    victim = pd.read_parquet(catalog_copy / "items.parquet")["image"].iloc[3]
    (catalog_copy / victim).unlink()
    with pytest.raises(CatalogError, match=f"image '{victim}', which does not exist"):
        load_catalog(catalog_copy)


def test_missing_and_corrupt_files(catalog_copy, tmp_path):
    (catalog_copy / "events.parquet").write_bytes(b"garbage")
    with pytest.raises(CatalogError, match="events.parquet is not a readable parquet file"):
        load_catalog(catalog_copy)
    (catalog_copy / "queries.parquet").unlink()
    with pytest.raises(CatalogError, match="queries.parquet is missing"):
        load_catalog(catalog_copy)
    with pytest.raises(CatalogError, match="not a directory"):
        load_catalog(tmp_path / "absent")


def test_cli_prints_one_error_line_not_a_traceback(catalog_copy):
    _edit(catalog_copy, "items.parquet", lambda d: d.drop(columns=["title"]))
    result = CliRunner().invoke(app, ["catalog", "validate", str(catalog_copy)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines == [f"error: catalog {catalog_copy}: items.parquet is missing column 'title'"]
    assert "Traceback" not in result.output


def test_cli_validate_ok(tiny_world):
    result = CliRunner().invoke(app, ["catalog", "validate", str(tiny_world)])
    assert result.exit_code == 0, result.output
    assert "ok - 120 items" in result.output


def test_optional_columns_get_their_documented_defaults(catalog_copy):
    """A team's export: no prices, no request ids or times on queries, a bare log, no event file."""
    _edit(catalog_copy, "items.parquet", lambda d: d[["item_id", "image", "category", "title"]])
    _edit(catalog_copy, "queries.parquet", lambda d: d.drop(columns=["ts", "request_id"]))
    _edit(catalog_copy, "events.parquet", lambda d: d[["type", "ts", "user_id", "item_id"]])
    c = load_catalog(catalog_copy)
    assert c.items["price"].isna().all()
    assert (c.queries["request_id"] == c.queries["query_id"]).all()
    train = c.queries["split"] == "train"
    assert (c.queries.loc[train, "ts"] == c.events["ts"].max() + 1).all()  # a train query: after the whole log
    assert (c.queries.loc[~train, "ts"] == c.events["ts"].min()).all()  # a held-out one reads no history
    assert [list(t) for t in c.queries["target_item_ids"]] == [[t] for t in c.queries["target_item_id"]]
    ev = c.events
    assert (ev["scene"] == "unknown").all() and (ev["position"] == -1).all() and ev["price"].isna().all()
    assert ev["request_id"].isna().all() and ev["event_id"].is_unique
    assert list(load_catalog(catalog_copy).events["event_id"]) == list(ev["event_id"])  # derived, stable
    (catalog_copy / "events.parquet").unlink()
    c = load_catalog(catalog_copy)
    assert len(c.events) == 0 and (c.queries["ts"] == 0).all()
