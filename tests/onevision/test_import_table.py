"""`import_table`: your own items, event log and query photos as a catalog, every rejected row counted."""

import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog
from onevision.importers.table import TableImport, import_table, parse_timestamp

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def _image(path: Path, k: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24 + k, 20), (k * 30 % 256, 90, 200 - k * 10)).save(path)
    return path.name


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def shop(tmp_path):
    src = tmp_path / "shop"
    for k, name in enumerate(["a1.png", "a1_v1.jpg", "a1_v2.jpg", "a2.jpg", "a3.png", "a7.jpg", "a8.png"]):
        _image(src / "imgs" / name, k)
    for k in range(12):
        _image(src / "photos" / f"p{k}.jpg", k + 10)
    (src / "imgs" / "broken.jpg").write_bytes(b"not an image at all")
    absolute = src / "imgs" / "a8.png"
    items = _csv(src / "items.csv", "item_id,image,category,title,price,views", [
        "a1,imgs/a1.png,mugs,Red mug,10,imgs/a1_v1.jpg|imgs/a1_v2.jpg",
        "a2,imgs/a2.jpg,mugs,Blue mug,,",
        "a3,imgs/a3.png,lamps,Lamp,abc,",                   # non-numeric price
        "a4,imgs/missing.png,lamps,Lamp 2,4,",              # missing image file
        "a5,imgs/broken.jpg,lamps,Lamp 3,4,",               # unreadable image file
        "a1,imgs/a2.jpg,mugs,Red mug again,11,",            # duplicate item id
        "a6,,lamps,No image,4,",                            # empty required field
        "a7,imgs/a7.jpg,lamps,Lamp 4,-1,",                  # negative price
        f"a8,{absolute},rugs,Rug,3.5,imgs/a1_v1.jpg|imgs/nope.jpg",  # absolute path; one view missing
    ])
    events = _csv(src / "events.csv", "user_id,item_id,type,timestamp,price", [
        f"u1,a1,click,{T0},",
        f"u1,a1,purchase,{(T0 + 100) * 1000},10",
        "u2,a2,BUY,2023-11-14T22:15:00Z,",
        f"u2,a2,view,{T0},",                                # unknown event type
        f"u3,zzz,click,{T0},",                              # unknown item
        f"u3,a3,click,{T0},",                               # unknown item (a3 was rejected)
        "u3,a1,click,,",                                    # missing timestamp
        "u3,a1,click,not-a-date,",                          # bad timestamp
        f"u3,a1,order,{T0 + 200},-5",                       # negative price
        f",a1,click,{T0},",                                 # empty required field
        f"u4,a8,click,{T0 - 50},",
    ])
    queries = _csv(src / "queries.csv", "image,item_id,user_id,kind,timestamp,target_item_ids", [
        f"photos/p0.jpg,a1,u1,click,{T0 + 10},",
        f"photos/p1.jpg,a2,u1,order,{T0 + 50},a2|a8",        # latest: test
        f"photos/p2.jpg,a1,u2,click,{T0 + 20},",
        f"photos/p3.jpg,a8,u2,click,{T0 + 40},",             # second latest: val
        f"photos/p4.jpg,a2,,,{T0 + 30},",
        "photos/p5.jpg,a1,u3,click,,",                       # no timestamp: hash
        "photos/p6.jpg,a2,u3,click,,",                       # no timestamp: hash
        f"photos/p7.jpg,a3,u1,click,{T0},",                  # unknown item
        f"photos/missing.jpg,a1,u1,click,{T0},",             # missing image file
        f"photos/p8.jpg,a1,u1,view,{T0},",                   # unknown query kind
        "photos/p9.jpg,a1,u1,click,soon,",                   # bad timestamp
        f"photos/p10.jpg,a1,u1,click,{T0},zzz",              # unknown item (an extra target)
    ])
    return src, items, events, queries


def _import(shop, out, **kw):
    src, items, events, queries = shop
    return import_table(TableImport(items=items, events=events, queries=queries, out=out, progress=False, **kw))


def test_rejected_rows_are_counted_by_reason(shop, tmp_path):
    r = _import(shop, tmp_path / "cat")
    assert r.rejected == {
        "items": {"non-numeric price": 1, "missing image file": 1, "unreadable image file": 1,
                  "duplicate item id": 1, "empty required field": 1, "negative price": 1},
        "item views": {"missing image file": 1},
        "events": {"unknown event type": 1, "unknown item": 2, "missing timestamp": 1, "bad timestamp": 1,
                   "negative price": 1, "empty required field": 1},
        "queries": {"unknown item": 2, "missing image file": 1, "unknown query kind": 1, "bad timestamp": 1},
    }
    assert r.counts["items"] == {"rows": 9, "imported": 3, "rejected": 6}
    assert r.counts["events"] == {"rows": 11, "imported": 4, "rejected": 7}
    assert r.counts["queries"] == {"rows": 12, "imported": 7, "rejected": 5}
    assert r.examples["items"]["duplicate item id"] == ["row 6: item_id 'a1' (the first row with it is kept)"]
    report = (tmp_path / "cat" / "import_report.json").read_text()
    assert '"unreadable image file": 1' in report and "row 4: image 'imgs/missing.png'" in report


def test_catalog_loads_with_prices_views_events_and_time_split(shop, tmp_path):
    r = _import(shop, tmp_path / "cat")
    c = load_catalog(tmp_path / "cat")
    assert c.items["item_id"].tolist() == ["a1", "a2", "a8"]
    price = dict(zip(c.items["item_id"], c.items["price"]))
    assert price["a1"] == 10.0 and price["a8"] == 3.5 and math.isnan(price["a2"])  # unknown stays unknown
    views = dict(zip(c.items["item_id"], c.items["views"]))
    assert len(views["a1"]) == 2 and len(views["a2"]) == 0 and len(views["a8"]) == 1
    assert all((c.root / v).is_file() for vs in views.values() for v in vs)
    assert all(p.is_file() and str(p).startswith(str(c.root)) for p in c.item_images())  # copied in
    # events: aliases, time order, ts in ms from seconds, ms and ISO 8601
    assert c.events["type"].tolist() == ["click", "click", "order", "order"]
    assert c.events["ts"].tolist() == [(T0 - 50) * 1000, T0 * 1000, (T0 + 100) * 1000, (T0 + 100) * 1000]
    assert c.events["price"].tolist()[2] == 10.0 and math.isnan(c.events["price"].tolist()[3])
    # queries: the latest by time is test, the one before val; untimed ones by hash
    q = c.queries.set_index("query_id")
    assert q.loc["q000002", "split"] == "test" and q.loc["q000004", "split"] == "val"
    assert (q.loc[["q000001", "q000003", "q000005"], "split"] == "train").all()
    assert q.loc["q000005", "user_id"] == "anonymous" and q.loc["q000005", "kind"] == "click"
    assert q.loc["q000002", "kind"] == "order" and list(q.loc["q000002", "target_item_ids"]) == ["a2", "a8"]
    assert q.loc["q000001", "ts"] == (T0 + 10) * 1000
    raw = pd.read_parquet(tmp_path / "cat" / "queries.parquet").set_index("query_id")
    assert math.isnan(raw.loc["q000006", "ts"])  # no invented times; load_catalog fills its default
    assert "request_id" not in raw.columns
    assert r.split == "time, hash where no timestamp"
    assert any("2 of 7 queries have no timestamp" in n for n in r.notes)


def test_same_inputs_give_byte_identical_tables(shop, tmp_path):
    _import(shop, tmp_path / "one")
    _import(shop, tmp_path / "two")
    for name in ("items.parquet", "queries.parquet", "events.parquet"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_hash_split_without_timestamps_and_views_as_queries(shop, tmp_path):
    src, items, _, _ = shop
    untimed = _csv(src / "untimed.csv", "image,item_id", [f"photos/p{k}.jpg,{'a1' if k % 2 else 'a2'}"
                                                         for k in range(12)])
    r = import_table(TableImport(items=items, queries=untimed, out=tmp_path / "h", progress=False, seed=3))
    assert r.split == "hash (no timestamps)" and sum(r.splits.values()) == 12
    again = import_table(TableImport(items=items, queries=untimed, out=tmp_path / "h2", progress=False, seed=3))
    assert again.catalog.queries["split"].tolist() == r.catalog.queries["split"].tolist()
    assert len(r.catalog.events) == 0 and "ts" not in pd.read_parquet(tmp_path / "h" / "queries.parquet").columns

    v = import_table(TableImport(items=items, out=tmp_path / "v", progress=False))  # no queries table
    assert v.split == "hash" and any("last extra view as a query photo" in n for n in v.notes)
    q = v.catalog.queries
    assert q["query_id"].tolist() == ["view-a1", "view-a8"] and set(q["user_id"]) == {"anonymous"}
    views = dict(zip(v.catalog.items["item_id"], v.catalog.items["views"]))
    assert len(views["a1"]) == 1 and len(views["a8"]) == 0  # the query photo left the item's views
    with pytest.raises(ValueError, match="split given"):
        import_table(TableImport(items=items, queries=untimed, out=tmp_path / "g", split="given", progress=False))


def test_parquet_inputs_lists_and_given_split(tmp_path):
    src = tmp_path / "pq"
    for name in ("i1.png", "i1b.png", "i2.png", "q1.jpg", "q2.jpg"):
        _image(src / name, len(name))
    pd.DataFrame({"item_id": ["i1", "i2"], "image": ["i1.png", "i2.png"], "category": ["c", "d"],
                  "title": ["One", "Two"], "price": [1.5, None], "views": [["i1b.png"], []]}
                 ).to_parquet(src / "items.parquet")
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["i1", "i2"], "type": ["order", "click"],
                  "ts": [T0 * 1000, T0 + 1]}).to_parquet(src / "events.parquet")
    pd.DataFrame({"image": ["q1.jpg", "q2.jpg"], "item_id": ["i1", "i2"], "split": ["test", "train"],
                  "target_item_ids": [["i2"], []]}).to_parquet(src / "queries.parquet")
    r = import_table(TableImport(items=src / "items.parquet", events=src / "events.parquet",
                                 queries=src / "queries.parquet", out=tmp_path / "c", split="given", progress=False))
    c = r.catalog
    assert r.rejected == {} and r.split == "given" and c.queries["split"].tolist() == ["test", "train"]
    assert [list(t) for t in c.queries["target_item_ids"]] == [["i1", "i2"], ["i2"]]
    assert c.items["price"].tolist()[0] == 1.5 and math.isnan(c.items["price"].tolist()[1])
    assert [len(v) for v in c.items["views"]] == [1, 0]
    assert c.events["ts"].tolist() == [T0 * 1000, (T0 + 1) * 1000]


def test_parse_timestamp():
    assert parse_timestamp(T0) == T0 * 1000 and parse_timestamp(str(T0 * 1000)) == T0 * 1000
    assert parse_timestamp("1700000000.5") == T0 * 1000 + 500
    assert parse_timestamp("2023-11-14T22:13:20Z") == T0 * 1000
    assert parse_timestamp("2023-11-14T23:13:20+01:00") == T0 * 1000
    assert parse_timestamp("2023-11-14 22:13:20") == T0 * 1000  # naive: UTC
    assert parse_timestamp(pd.Timestamp("2023-11-14T22:13:20")) == T0 * 1000
    assert parse_timestamp("") is None and parse_timestamp(None) is None and parse_timestamp(float("nan")) is None
    for bad in ("-5", "yesterday", "2023-13-40"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_cli_prints_counts_and_each_reason(shop, tmp_path):
    from onevision_cli.main import app

    src, items, events, queries = shop
    result = CliRunner().invoke(app, ["catalog", "import", "table", str(items), str(tmp_path / "cli"),
                                      "--events", str(events), "--queries", str(queries), "--test-share", "0.2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()  # the progress bar goes to stderr
    assert "items: 3 imported of 9 rows" in lines and "rejected events: unknown item: 2" in lines
    assert "queries: 7 imported of 12 rows" in result.output and "rejected items: duplicate item id: 1" in lines
    bad = CliRunner().invoke(app, ["catalog", "import", "table", str(src / "nope.csv"), str(tmp_path / "x")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
