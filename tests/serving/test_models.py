"""The served models follow the online store's S_conv: items that share a SID change order when
the item-stats worker's live figures say so, in the models already loaded and in those a hot
swap loads later (real Redis through Feast)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import yaml

from features.client import feature_store, read_s_conv
from features.redis_writer import item_row, queue_rows
from infra.settings import redis_client
from onevision.catalog.format import load_catalog
from onevision.registry import current_version, load_version, publish
from serving.experiments import ExperimentConfig
from serving.models import ServedModels
from tests.integration.test_stream_worker import isolated

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(services, tiny_world, tiny_generator, tmp_path_factory):
    version, _ = tiny_generator
    root = tmp_path_factory.mktemp("served")
    registry = root / "registry"
    shutil.copytree(version.parent.parent, registry)
    experiments = root / "experiments.yaml"
    experiments.write_text(yaml.safe_dump({"default_variant": "onevision",
                                           "variants": [{"name": "onevision", "model": version.parent.name}]}))
    models = ServedModels(load_catalog(tiny_world), registry, ExperimentConfig.load(experiments), beam=8)
    return models, registry / version.parent.name, isolated(services, "served-models", db=7)


def shared_group(search) -> np.ndarray:
    """The items of a SID that several items share (near duplicates)."""
    g = search.searcher.items
    sizes = np.diff(g.starts)
    assert (sizes > 1).any(), "the tiny world has no shared SID to order"
    k = int(np.argmax(sizes > 1))
    return g.members[g.starts[k]:g.starts[k + 1]]


def test_items_inside_a_sid_follow_the_live_s_conv(served):
    models, model_dir, settings = served
    search = next(iter(models.searches.values()))
    before = shared_group(search)
    last = search.item_ids[before[-1]]  # the catalog's least converting item of the group ...
    with redis_client(settings.redis) as r, r.pipeline() as pipe:
        queue_rows(pipe, "item_id", [(last, item_row(search.searcher.item_sids[before[-1]], 500, 90, 9000.0, 1e6,
                                                     int(time.time() * 1000)))])
        pipe.execute()
    live = read_s_conv(feature_store(settings), models.item_ids())
    assert live == {last: 1e6}  # items the worker has not seen are left out
    models.use_s_conv(live)
    after = shared_group(search)
    assert search.item_ids[after[0]] == last  # ... now converts best and leads its SID
    assert sorted(after) == sorted(before)
    assert list(after[1:]) == [i for i in before if i != before[-1]]  # the others keep the catalog's order
    items = search.searcher.items
    models.use_s_conv(dict(live))  # the next read, unchanged: nothing is rebuilt
    assert search.searcher.items is items

    # a hot swap loads the new one with them too
    version = model_dir / current_version(model_dir.parent, model_dir.name)
    manifest, config = load_version(version)
    publish(model_dir.parent, model_dir.name, {n: version / n for n in manifest["files"] if n != "config.json"}, config,
            metrics=manifest["metrics"], parent=version.name)
    assert models.refresh() == ["onevision"]
    swapped = next(iter(models.searches.values()))
    assert swapped is not search
    assert swapped.item_ids[shared_group(swapped)[0]] == last
