"""The tiny pipeline with `--device cpu` asked for explicitly: the served model's tensors all live
on that device, and a beam search reads values back to the host only once, at its end (no
per-step round trips), whatever the number of SID levels."""

import shutil

import pytest
import torch
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog
from onevision.device import DeviceAudit, resolve_device
from onevision.generator.decode.beam import decode
from onevision.generator.image_search import ImageSearch
from onevision.registry import resolve
from onevision_cli.main import app

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def served(tiny_world, tiny_tokenizers, tmp_path_factory):
    src, cache, _ = tiny_tokenizers
    root = tmp_path_factory.mktemp("device")
    shutil.copytree(src, root / "registry")
    result = CliRunner().invoke(app, ["train", "all", "--catalog", str(tiny_world), "--preset", "tiny", "--device",
                                      "cpu", "--registry", str(root / "registry"), "--cache", str(cache),
                                      "--runs", str(root / "runs")])
    assert result.exit_code == 0, result.output
    catalog = load_catalog(tiny_world)
    return ImageSearch.from_registry(resolve(root / "registry" / "generator-vrq-tiny"), catalog, "cpu"), catalog


def test_every_tensor_of_a_served_search_is_on_the_chosen_device(served):
    search, catalog = served
    device = torch.device("cpu")
    assert search.searcher.model.device == device
    assert {p.device for p in search.encoder.parameters()} == {device}
    photos = [catalog.path(p) for p in catalog.queries["image"][:6]]
    with DeviceAudit() as audit:
        answers = search.search(photos, beam=16, k=5)
    assert len(answers) == 6 and all(a.hits for a in answers)
    assert audit.devices == {device}


def test_a_beam_search_reads_the_host_once_at_its_end(served):
    search, catalog = served
    searcher = search.searcher
    vis = search.encode([catalog.path(p) for p in catalog.queries["image"][:6]])
    prompts = search.prompts(vis.tokens, vis.embedding)
    guide = searcher.guide.bonuses(prompts.embedding, 80.0)
    enc, mask = searcher.model.encode(prompts)  # transformers' encoder checks its mask once on the host
    with DeviceAudit() as audit:
        res = decode(searcher.model.bart, enc, mask, searcher.trie, beam=16, guide=guide)
    assert searcher.trie.levels >= 3 and res.sids.shape == (6, 16, searcher.trie.levels)
    # the SIDs and their scores, copied once each; before, every level copied nodes and codes to numpy
    assert audit.host_reads == ["cpu", "numpy", "cpu", "numpy"], audit.host_reads


def test_devices_are_resolved_or_refused_clearly():
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")
