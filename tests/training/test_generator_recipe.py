"""The generator end to end on the tiny world: four stages published with their curves and
metrics; only catalog SIDs, batched or not; cold-start users and bad photos handled."""

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog
from onevision.eval.generative import evaluate_generator, searcher_for, without_user
from onevision.generator.image_search import ImageSearch
from onevision.generator.model import OneVisionGenerator
from onevision.images import ImageError
from onevision.registry import load_version
from onevision_cli.main import app
from training.generator import ALL_STAGES


def test_published_with_stages_curves_and_metrics(tiny_generator):
    version, _ = tiny_generator
    manifest, config = load_version(version)
    assert config["stages"] == list(ALL_STAGES) and config["kind"] == "onevision-generator"
    for stage in ALL_STAGES:
        assert (version / f"loss_{stage}.png").stat().st_size > 1000
        assert manifest["metrics"]["stages"][stage]["epochs"] >= 1
    log = json.loads((version / "training_log.json").read_text())
    assert all(np.isfinite(log[s]["losses"]).all() for s in ALL_STAGES)
    val = manifest["metrics"]["val"]
    assert set(val) == {"click", "order", "all"} and 0 <= val["all"]["HR@10"] <= 1


def test_every_generated_sid_is_a_catalog_sid_batched_or_not(tiny_generator):
    version, data = tiny_generator
    model = OneVisionGenerator.load(version)
    searcher = searcher_for(model, data)
    test, q = data.evaluation("test")
    prompts = test.prompts(data.tokens, data.bank)
    batched = searcher.search(prompts, beam=16)
    finite = np.isfinite(batched.scores)
    assert finite[:, :10].all()
    assert searcher.trie.contains(batched.sids[finite]).all()
    for i in range(0, len(test), 7):
        single = searcher.search(test.prompts(data.tokens, data.bank, slice(i, i + 1)), beam=16)
        assert (single.sids[0] == batched.sids[i]).all() and (single.items[0] == batched.items[i]).all()
    assert (np.diff(batched.rescored, axis=1) <= 1e-5).all()  # the beam is ordered by its re-scored value
    unguided = searcher_for(model, data, lookahead=False).search(prompts, beam=16)
    # beam order only (no look-ahead either): the log-probabilities are non-increasing
    searcher.config = dataclasses.replace(searcher.config, similarity_weight=0.0)
    plain = searcher.search(prompts, beam=16)
    assert (np.diff(plain.scores, axis=1) <= 1e-5).all() and (plain.rescored == plain.scores).all()
    # without the look-ahead the re-score only re-orders the beam's SIDs; with it the beam keeps others
    assert {tuple(s) for s in plain.sids[0].tolist()} == {tuple(s) for s in unguided.sids[0].tolist()}
    assert any({tuple(s) for s in plain.sids[r].tolist()} != {tuple(s) for s in batched.sids[r].tolist()}
               for r in range(len(test)))
    res = evaluate_generator(model, data, test, q["kind"].to_numpy(), searcher=searcher)
    assert res["all_sids_valid"] and (res["ranked"] >= 0).all()


def test_without_user_blanks_a_copy_and_searches_like_a_cold_start(tiny_generator):
    version, data = tiny_generator
    test, _ = data.evaluation("test")
    known = (test.long_sid >= 0).any(1)
    assert known.any()
    before = test.long_sid.copy(), test.short_sids.copy()
    blank = without_user(test)
    assert (blank.long_sid == -1).all() and (blank.short_sids == -1).all() and (blank.recent_sids == -1).all()
    assert (test.recent_sids >= 0).any()
    assert (test.long_sid == before[0]).all() and (test.short_sids == before[1]).all()  # the cached split is intact
    assert (blank.image == test.image).all() and (blank.target == test.target).all()
    searcher = searcher_for(OneVisionGenerator.load(version), data)
    res = searcher.search(blank.prompts(data.tokens, data.bank), beam=8)
    assert searcher.trie.contains(res.sids[np.isfinite(res.scores)]).all()


def test_cold_start_user_and_bad_photos(tiny_generator, tiny_world):
    version, data = tiny_generator
    search = ImageSearch.from_registry(version, load_catalog(tiny_world))
    photo = (tiny_world / data.catalog.queries["image"].iloc[0]).read_bytes()
    cold, warm = search.search([photo, photo], [{}, {"short_sids": ["1-0-2-3-1"], "long_sid": [0, 1, 0, 2, 3]}])
    assert len(cold.hits) == 10 and len({h.item_id for h in cold.hits}) == 10
    assert all(h.item_id in set(data.catalog.items["item_id"]) for h in cold.hits + warm.hits)
    assert isinstance(cold.low_confidence, bool) and -1 <= cold.similarity <= 1
    for bad, reason in ((b"", "empty"), (b"not an image at all", "not an image"),
                        (photo[: len(photo) // 3], "decoded")):
        with pytest.raises(ImageError, match=reason):
            search.search([bad])
    with pytest.raises(ValueError, match="codes"):
        search.search([photo], [{"short_sids": ["1-2"]}])


def test_the_feature_stores_recent_items_reach_the_category_term(tiny_generator, tiny_world):
    version, data = tiny_generator
    search = ImageSearch.from_registry(version, load_catalog(tiny_world))
    photo = (tiny_world / data.catalog.queries["image"].iloc[0]).read_bytes()
    sids = search.searcher.item_sids
    vis = search.encode([photo, photo])
    prompts = search.prompts(vis.tokens, vis.embedding,
                             [{"recent_sids": [sids[3].tolist(), "-".join(map(str, sids[5]))]}, {}])
    assert prompts.recent_sids.tolist() == [[sids[3].tolist(), sids[5].tolist()], [[-1] * len(sids[0])] * 2]

    (cold,) = search.search([photo])
    category = dict(zip(data.catalog.items["item_id"], data.catalog.items["category"]))
    other = next(category[h.item_id] for h in cold.hits[::-1] if category[h.item_id] != category[cold.hits[0].item_id])
    fan = {"recent_sids": [s.tolist() for i, s in zip(search.item_ids, sids) if category[i] == other][:10]}
    search.searcher.category.weight = 1000.0
    (warm,) = search.search([photo], [fan])
    assert category[cold.hits[0].item_id] != other == category[warm.hits[0].item_id]


def test_cli_train_all_runs_the_named_stages(tiny_world, tiny_tokenizers, tmp_path):
    registry, cache, _ = tiny_tokenizers
    result = CliRunner().invoke(app, ["train", "all", "--catalog", str(tiny_world), "--preset", "tiny",
                                      "--stages", "sft", "--name", "generator-cli-test", "--registry", str(registry),
                                      "--cache", str(cache), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "sft" in result.output and "val order" in result.output and "generator-cli-test" in result.output
    assert load_version(registry / "generator-cli-test" / "v0001")[1]["stages"] == ["sft"]
    bad = CliRunner().invoke(app, ["train", "all", "--catalog", str(tiny_world), "--stages", "sft,nonsense",
                                   "--preset", "tiny", "--registry", str(registry), "--cache", str(cache),
                                   "--runs", str(tmp_path / "runs")])
    assert bad.exit_code == 2 and "unknown stages" in bad.output
