"""`train mca`: the cascade published to the registry ranks exactly as the fitted one, and
`CascadeSearch` serves it from photo bytes and Feast-style user SIDs."""

import numpy as np
import pytest
from typer.testing import CliRunner

from onevision.baselines.mca import UserArrays
from onevision.baselines.mca_search import CascadeSearch
from onevision.catalog.format import load_catalog
from onevision.encoders.visual_tokens import encode_images
from onevision.generator.data import load_generator_data
from onevision.images import ImageError, load_rgb
from onevision.registry import load_version, resolve
from onevision_cli.main import app
from training.mca import fit_mca
from training.point_in_time import point_in_time


@pytest.fixture(scope="module")
def published(tiny_world, tiny_tokenizers, tmp_path_factory):
    import shutil

    registry, cache, _ = tiny_tokenizers
    reg = tmp_path_factory.mktemp("mca") / "registry"
    shutil.copytree(registry, reg)
    result = CliRunner().invoke(app, ["train", "mca", "--catalog", str(tiny_world), "--preset", "tiny",
                                      "--registry", str(reg), "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    return resolve(reg / "mca-tiny"), cache


def test_published_cascade_ranks_like_the_fitted_one(published, tiny_world):
    version, cache = published
    manifest, config = load_version(version)
    assert {"ranker.safetensors", "item_embedding.safetensors"} <= set(manifest["files"])
    assert manifest["metrics"]["trained_on"] > 0 and "confidence_threshold" in manifest["metrics"]
    catalog = point_in_time(load_catalog(tiny_world), cache)  # as `train mca` fits it
    tok = resolve(config["tokenizer"])
    data = load_generator_data(catalog, tok, cache, progress=False)
    fitted, _ = fit_mca(catalog, data)
    served = CascadeSearch.from_registry(version, catalog)
    test, q = data.evaluation("test")
    query = data.bank.tokens.embedding[test.image]
    ctx = data.context(q)
    users = UserArrays(ctx.short_items, ctx.long_items)
    assert (served.mca.rank(query, users) == fitted.rank(query, users)).all()


def test_cascade_search_answers_photos_with_user_sids(published, tiny_world):
    version, _ = published
    catalog = load_catalog(tiny_world)
    ranked, plain = (CascadeSearch.from_registry(version, catalog),
                     CascadeSearch.from_registry(version, catalog, ranking=False))
    photo = (tiny_world / catalog.queries["image"].iloc[0]).read_bytes()
    item = 5
    sid = ranked.item_sids[item]
    user = {"short_sids": ["-".join(map(str, sid))], "long_sid": sid.tolist()}
    arrays = ranked.users([user, {}])
    groups = ranked.served.groups
    group = groups.groups(sid[None])[0]
    assert arrays.short_items[0, 0] == groups.members[groups.starts[group]]  # best S_conv item of the SID
    assert item in arrays.long_items[0] and (arrays.short_items[1] == -1).all() and len(arrays.long_items[1]) == 0
    cold, warm = ranked.search([photo, photo], [{}, user], k=6)
    assert len(cold.hits) == 6 and len({h.item_id for h in cold.hits}) == 6
    assert all(h.item_id in set(catalog.items["item_id"]) for h in cold.hits + warm.hits)
    assert isinstance(cold.low_confidence, bool) and -1 <= cold.similarity <= 1
    (pre,) = plain.search([photo], k=6)
    query = encode_images(plain.encoder, [load_rgb(photo)]).embedding
    assert [h.item_id for h in pre.hits] == [plain.item_ids[i] for i in plain.mca.prerank(query)[0][0, :6]]
    with pytest.raises(ImageError):
        ranked.search([b"not an image"])
    np.testing.assert_array_equal(ranked.item_sids, plain.item_sids)
