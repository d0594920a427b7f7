"""The registry on an S3-protocol store (a real moto server): push, conditional CURRENT flips,
checked node-local copies with their references, and mirrored directories."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from onevision.registry import RegistryError, current_version, promote, publish, rollback
from onevision.registry_store import CurrentMoved, RegistryView, StoreRegistry
from onevision.storage import is_url, localize


def _file(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


@pytest.fixture()
def local_registry(tmp_path) -> Path:
    """A tokenizer and a generator with two versions; the generator's config names the tokenizer
    by an absolute path that a node of a cluster would not have."""
    root = tmp_path / "registry"
    tok = publish(root, "tokenizer-x", {"codes.bin": _file(tmp_path, "codes.bin", "codes")}, {"k": 1})
    v1 = publish(root, "generator-x", {"weights.bin": _file(tmp_path, "w1.bin", "one")}, {"tokenizer": str(tok)})
    publish(root, "generator-x", {"weights.bin": _file(tmp_path, "w2.bin", "two")},
            {"tokenizer": str(tok), "trained_by": "dpo-stream"}, parent=v1.name)
    return root


def _url() -> str:
    return f"s3://onevision/{uuid.uuid4().hex[:8]}/registry"


def test_push_then_a_reader_gets_checked_copies_with_references_and_lineage(s3_server, local_registry, tmp_path):
    url = _url()
    store = StoreRegistry(url)
    for model in ("tokenizer-x", "generator-x"):
        store.push(local_registry, model)
    assert store.versions("generator-x") == ["v0001", "v0002"]
    assert store.current_version("generator-x") == "v0002"
    again = store.push(local_registry, "generator-x")
    assert again["uploaded"] == [] and again["current"] == "v0002"  # idempotent

    copy = store.fetch("generator-x", "v0002", tmp_path / "cache")
    assert (copy / "weights.bin").read_text() == "two"
    assert not (tmp_path / "cache" / "generator-x" / "v0001").exists()  # not its ancestors' weights
    assert (tmp_path / "cache" / "tokenizer-x" / "v0001" / "codes.bin").read_text() == "codes"  # its reference
    from onevision.registry import resolve_ref

    tok_ref = json.loads((copy / "config.json").read_text())["tokenizer"]
    assert resolve_ref(tok_ref, copy) == tmp_path / "cache" / "tokenizer-x" / "v0001"  # the checked copy first

    rollback(local_registry, "generator-x")
    assert store.push(local_registry, "generator-x")["current"] == "v0001"  # a rollback travels too
    assert store.current_version("generator-x") == "v0001"

    # someone else publishes v0003 from another registry: a stale local one may not move CURRENT back
    other = tmp_path / "elsewhere"
    shutil.copytree(local_registry, other)
    publish(other, "generator-x", {"weights.bin": _file(tmp_path, "w3.bin", "three")}, {"k": 3}, parent="v0002")
    store.push(other, "generator-x")
    promote(local_registry, "generator-x", "v0002")
    with pytest.raises(RegistryError, match="does not have"):
        store.push(local_registry, "generator-x")
    assert store.current_version("generator-x") == "v0003"
    assert store.push(local_registry, "generator-x", force=True)["current"] == "v0002"


def test_current_moves_only_from_what_the_mover_read(s3_server, local_registry):
    store = StoreRegistry(_url())
    store.push(local_registry, "tokenizer-x")
    store.push(local_registry, "generator-x")
    seen, etag = store.current("generator-x")
    store.set_current("generator-x", "v0001", expected=seen, etag=etag)  # one writer moves it
    with pytest.raises(CurrentMoved):  # a second writer that read before that cannot undo it
        store.set_current("generator-x", "v0002", expected=seen)
    with pytest.raises(CurrentMoved):  # nor can one that passes the stale ETag (S3's If-Match says 412)
        store.set_current("generator-x", "v0002", expected="v0001", etag=etag)
    assert store.current_version("generator-x") == "v0001"
    with pytest.raises(RegistryError):
        store.set_current("generator-x", "v0009", expected="v0001")


def test_uploads_claim_distinct_versions_and_unfinished_ones_stay_invisible(s3_server, local_registry, monkeypatch):
    store = StoreRegistry(_url())
    a = store.upload("generator-x", local_registry / "generator-x" / "v0001")
    store.fs.pipe_file(f"{store.root}/generator-x/v0002/.claim", b"", mode="create")  # a publisher mid-upload
    assert store.versions("generator-x") == ["v0001"]  # no manifest yet: not a version
    b = store.upload("generator-x", local_registry / "generator-x" / "v0002")
    assert (a, b) == ("v0001", "v0003")  # the claimed number is not reused
    assert store.read_manifest("generator-x", "v0003")["version"] == "v0003"
    with pytest.raises(RegistryError, match="already claimed"):
        store.upload("generator-x", local_registry / "generator-x" / "v0001", "v0001")
    store.fs.pipe_file(f"{store.root}/generator-x/v0009/.claim", b"")  # a publisher that died mid-upload
    monkeypatch.setattr("onevision.registry_store.STALE_CLAIM_S", 0.0)
    assert store.upload("generator-x", local_registry / "generator-x" / "v0001", "v0009") == "v0009"


def test_a_corrupt_remote_file_is_refused(s3_server, local_registry, tmp_path):
    store = StoreRegistry(_url())
    store.push(local_registry, "tokenizer-x")
    store.fs.pipe_file(f"{store.root}/tokenizer-x/v0001/codes.bin", b"tampered")
    with pytest.raises(RegistryError, match="sha256"):
        store.fetch("tokenizer-x", "v0001", tmp_path / "cache")
    assert not (tmp_path / "cache" / "tokenizer-x" / "v0001").exists()


def test_a_view_reads_a_local_path_or_a_url_the_same_way(s3_server, local_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("ONEVISION_CACHE", str(tmp_path / "node-cache"))
    url = _url()
    for model in ("tokenizer-x", "generator-x"):
        StoreRegistry(url).push(local_registry, model)
    local, remote = RegistryView(local_registry), RegistryView(url)
    assert not is_url(local_registry) and is_url(url) and not is_url(f"file://{local_registry}")
    for view in (local, remote, RegistryView(f"file://{local_registry}")):
        version = view.current_version("generator-x")
        assert version == current_version(local_registry, "generator-x")
        assert (view.version_dir("generator-x", version) / "weights.bin").read_text() == "two"
    assert str(remote.version_dir("generator-x", "v0002")).startswith(str(tmp_path / "node-cache"))


def test_a_directory_is_mirrored_once_per_content_under_its_own_name(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("ONEVISION_CACHE", str(tmp_path / "node-cache"))
    store = StoreRegistry(f"s3://onevision/{uuid.uuid4().hex[:8]}")
    store.fs.pipe_file(f"{store.root}/catalogs/small/items.parquet", b"items")
    store.fs.pipe_file(f"{store.root}/catalogs/small/images/a.jpg", b"jpeg")
    url = f"s3://{store.root}/catalogs/small"
    local = localize(url, "catalogs")
    assert local.name == "small"  # a catalog's name names its models (generator-vrq-small)
    assert (local / "images" / "a.jpg").read_bytes() == b"jpeg"
    stamp = json.loads((local / ".mirrored.json").read_text())
    assert localize(url, "catalogs") == local and json.loads((local / ".mirrored.json").read_text()) == stamp
    store.fs.pipe_file(f"{store.root}/catalogs/small/items.parquet", b"items, version 2")
    newer = localize(url, "catalogs")
    assert newer != local and (newer / "items.parquet").read_bytes() == b"items, version 2"
    assert (local / "items.parquet").read_bytes() == b"items"  # a reader of the old copy keeps it
    with pytest.raises(FileNotFoundError):
        localize(f"s3://{store.root}/nothing-here", "catalogs")


def test_replicas_on_one_node_mirror_concurrently_into_one_copy(s3_server, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("ONEVISION_CACHE", str(tmp_path / "node-cache"))
    store = StoreRegistry(f"s3://onevision/{uuid.uuid4().hex[:8]}")
    for i in range(20):
        store.fs.pipe_file(f"{store.root}/catalogs/tiny/images/{i}.jpg", bytes([i]) * 100)
    url = f"s3://{store.root}/catalogs/tiny"
    import subprocess
    import sys

    code = f"from onevision.storage import localize; print(localize({url!r}, 'catalogs'))"
    with ThreadPoolExecutor(4) as pool:  # four processes, as four replicas would
        runs = list(pool.map(lambda _: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True),
                             range(4)))
    assert all(r.returncode == 0 for r in runs), [r.stderr[-500:] for r in runs]
    assert len({r.stdout.strip() for r in runs}) == 1
    assert len(list(Path(runs[0].stdout.strip()).glob("images/*.jpg"))) == 20


def test_the_cli_pushes_a_model_with_the_models_it_names(s3_server, local_registry):
    from typer.testing import CliRunner

    from onevision_cli.main import app

    url = _url()
    push = ["registry", "push", "--to", url, "--registry", str(local_registry)]
    result = CliRunner().invoke(app, [*push, "generator-x"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("tokenizer-x: uploaded v0001")  # references first
    store = StoreRegistry(url)
    assert store.current_version("tokenizer-x") == "v0001" and store.current_version("generator-x") == "v0002"
    missing = CliRunner().invoke(app, [*push, "nothing-x"])
    assert missing.exit_code == 2 and "no versions to push" in missing.output
