"""The Grocery Store Dataset importer, on a miniature copy of the data set's layout."""

import pytest
from PIL import Image

from onevision.catalog.format import load_catalog
from onevision.importers.grocery import import_grocery

CLASSES = [("Golden-Delicious", 0, "Apple", 0, "Fruit/Apple/Golden-Delicious"),
           ("Granny-Smith", 1, "Apple", 0, "Fruit/Apple/Granny-Smith"),
           ("Oat-Milk-X", 2, "Oat-Milk", 1, "Packages/Oat-Milk/Oat-Milk-X")]


def _fake_grocery(root):
    ds = root / "dataset"
    lines = ["Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int),"
             "Iconic Image Path (str),Product Description Path (str)"]
    for name, cid, coarse, coarse_id, folder in CLASSES:
        d = ds / "iconic-images-and-descriptions" / folder
        d.mkdir(parents=True)
        Image.new("RGB", (40, 40), (cid * 80, 100, 50)).save(d / f"{name}_Iconic.jpg")
        (d / f"{name}_Description.txt").write_text("A fine product.")
        if cid != 1:
            (d / f"{name}_Information.txt").write_text(f"Title: {name} Deluxe \nCountry: Sweden\n")
        lines.append(f"{name},{cid},{coarse},{coarse_id},/iconic-images-and-descriptions/{folder}/{name}_Iconic.jpg,"
                     f"/iconic-images-and-descriptions/{folder}/{name}_Description.txt")
    (ds / "classes.csv").write_text("\n".join(lines) + "\n")
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        rows = []
        for k in range(n):
            name, cid, coarse, coarse_id, folder = CLASSES[k % 3]
            rel = f"{split}/{folder}/{name}_{k:03d}.jpg"
            (ds / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (50, 30), (10, cid * 60, 90)).save(ds / rel)
            rows.append(f"{rel}, {cid}, {coarse_id}")
        (ds / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_import_makes_a_valid_catalog(tmp_path):
    src = _fake_grocery(tmp_path / "grocery")
    c = import_grocery(src, tmp_path / "out", progress=False)
    assert c.items["item_id"].tolist() == ["g000", "g001", "g002"]
    assert c.items["category"].tolist() == ["Apple", "Apple", "Oat-Milk"]
    assert c.items["title"].tolist() == ["Golden-Delicious Deluxe", "Granny Smith", "Oat-Milk-X Deluxe"]
    assert c.queries.groupby("split").size().to_dict() == {"test": 2, "train": 3, "val": 1}
    assert c.queries["target_item_id"].tolist()[:3] == ["g000", "g001", "g002"]
    assert set(c.queries["kind"]) == {"click"} and len(c.events) == 0
    assert load_catalog(tmp_path / "out") is not None
    # accepts the dataset/ folder itself too
    import_grocery(src / "dataset", tmp_path / "out2", progress=False)


def test_not_the_data_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not the Grocery Store Dataset"):
        import_grocery(tmp_path, tmp_path / "out", progress=False)


def test_grocery_import_has_unknown_prices_stable_ids_and_rejects_a_missing_photo(tmp_path):
    src = _fake_grocery(tmp_path / "grocery")
    (src / "dataset" / "test/Fruit/Apple/Granny-Smith/Granny-Smith_001.jpg").unlink()  # listed but missing
    c = import_grocery(src, tmp_path / "out", progress=False)
    assert c.items["price"].isna().all()
    assert c.queries["query_id"].tolist() == ["train-00000", "train-00001", "train-00002", "val-00000", "test-00000"]
    assert c.queries["split"].tolist() == ["train"] * 3 + ["val", "test"]
    assert '"missing image file": 1' in (tmp_path / "out" / "import_report.json").read_text()
