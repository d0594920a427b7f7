"""Data-parallel training on Ray Train (real Ray, gloo on CPUs): `train all --workers 2` publishes a
generator whose ranks ended with identical weights (the published ones), and one Ray Train
worker gives the plain loop's loss curve."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog
from onevision.generator.data import load_generator_data
from onevision.generator.model import OneVisionGenerator
from onevision.registry import load_version, resolve
from onevision_cli.main import app
from training.configs import HINTS, IMAGE_SID, ParallelConfig
from training.distributed import check_same_weights, ray_storage, run_on_ray, weights_digest
from training.generator import train_stages

pytestmark = pytest.mark.timeout(900)


@pytest.fixture()
def registry(tiny_tokenizers, tmp_path):
    src, cache, _ = tiny_tokenizers
    shutil.copytree(src, tmp_path / "registry")
    return tmp_path / "registry", cache


def test_train_all_on_two_workers_publishes_what_both_ranks_hold(tiny_world, registry, tmp_path):
    reg, cache = registry
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", "all", "--catalog", str(tiny_world), "--preset", "tiny",
                                      "--workers", "2", "--registry", str(reg), "--cache", str(cache),
                                      "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert "trained by 2 Ray Train workers" in result.output
    version = resolve(reg / "generator-vrq-tiny")
    manifest, config = load_version(version)
    assert manifest["metrics"]["distributed"]["workers"] == 2
    (workdir,) = (p for p in (runs / "generator-vrq-tiny").iterdir() if p.suffix != ".ray")
    ranks = ray_storage(workdir) / "ranks"
    assert sorted(p.name for p in ranks.iterdir()) == ["rank-0.json", "rank-1.json"]
    assert all(json.loads(p.read_text())["world"] == 2 for p in ranks.iterdir())
    digest = check_same_weights(ranks, 2)  # raises when the ranks differ
    assert weights_digest(OneVisionGenerator.load(version)) == digest  # the driver published the ranks' weights
    assert list((ray_storage(workdir) / "train-all").glob("checkpoint_*/model.safetensors"))  # Ray Train's checkpoints
    for stage in config["stages"]:
        log = json.loads((workdir / stage / "state.json").read_text())
        assert log["finished"] and np.isfinite(log["losses"]).all()
    # the pruned student, distilled by two workers too
    result = CliRunner().invoke(app, ["train", "distill", "--catalog", str(tiny_world), "--preset", "tiny",
                                      "--workers", "2", "--model", "generator-vrq-tiny", "--registry", str(reg),
                                      "--cache", str(cache), "--runs", str(runs)])
    assert result.exit_code == 0, result.output
    student = resolve(reg / "generator-vrq-tiny")
    assert load_version(student)[0]["metrics"]["distributed"]["workers"] == 2
    (distilled,) = (p for p in (runs / "generator-vrq-tiny").glob("distill-*") if p.suffix != ".ray")
    assert weights_digest(OneVisionGenerator.load(student)) == check_same_weights(ray_storage(distilled) / "ranks", 2)
    assert not (distilled / "ray").exists()  # Ray Train's copies sit beside the checkpointed directory, not in it
    kept = [p for p in (ray_storage(distilled) / "distill").glob("checkpoint_*") if p.is_dir()]
    assert 1 <= len(kept) <= 2, kept  # only the newest copies are kept


def test_ranks_that_differ_are_refused(tmp_path):
    for rank, sha in ((0, "a" * 64), (1, "b" * 64)):
        (tmp_path / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "world": 2, "sha256": sha}))
    with pytest.raises(RuntimeError, match="different weights"):
        check_same_weights(tmp_path, 2)
    with pytest.raises(RuntimeError, match=r"ranks \[2\]"):
        check_same_weights(tmp_path, 3)


def test_one_ray_train_worker_reproduces_the_plain_loop(tiny_world, registry, tmp_path):
    reg, cache = registry
    catalog = load_catalog(tiny_world)
    tok = resolve(reg / "tokenizer-vrq-tiny")
    stages = ("pretrain", "sft")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a worker with one CPU runs
    try:
        data = load_generator_data(catalog, tok, cache, progress=False, image_sid=IMAGE_SID, hints=HINTS)
        plain, _ = train_stages(data, "tiny", stages, tmp_path / "plain", seed=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    recipe = {"preset": "tiny", "stages": list(stages), "seed": 0, "name": None, "image_sid": IMAGE_SID,
              "hints": HINTS, "hint_similarity": True, "sid_content": True}
    args = {"catalog": str(tiny_world.resolve()), "tokenizer_version": str(tok.resolve()),
            "cache": str(cache.resolve()), "recipe": recipe, "workdir": str(tmp_path / "ray")}
    run_on_ray("training.generator:stages_task", args, ParallelConfig(workers=1), ray_storage(tmp_path / "ray"), "one")
    for stage in stages:
        ours = json.loads((tmp_path / "ray" / stage / "state.json").read_text())["losses"]
        theirs = json.loads((tmp_path / "plain" / stage / "state.json").read_text())["losses"]
        assert len(ours) == len(theirs) > 0
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert json.loads((ray_storage(tmp_path / "ray") / "ranks" / "rank-0.json").read_text())["sha256"] == \
        weights_digest(plain)


def test_encoder_alignment_on_two_workers_matches_one_process(tiny_world, tmp_path):
    """`encoder align --workers 2`: the ranks split the trunk encoding and every batch, the loss
    sees the whole batch (its in-batch negatives are the single process's), so the losses are the
    single process's and both ranks end with the weights that are published."""
    from onevision.encoders.aligned import AlignedEfficientNet
    from training.align_encoder import AlignRecipe, train_aligned_encoder

    args = ["encoder", "align", "--catalog", str(tiny_world), "--steps", "6", "--batch-size", "16",
            "--no-evaluate", "--registry", str(tmp_path / "reg"), "--runs", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args + ["--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "2 Ray Train workers" in result.output
    version = resolve(tmp_path / "reg" / "encoder-tiny")
    manifest = load_version(version)[0]
    assert manifest["metrics"]["distributed"]["workers"] == 2
    (workdir,) = (p for p in (tmp_path / "runs" / "encoder-tiny").iterdir() if p.suffix != ".ray")
    assert weights_digest(AlignedEfficientNet.load(version)) == check_same_weights(ray_storage(workdir) / "ranks", 2)
    assert not list(workdir.glob("trunk-*"))  # the ranks' trunk shares are gone once exchanged
    ours = json.loads((workdir / "log.json").read_text())["losses"]
    _, log = train_aligned_encoder(load_catalog(tiny_world), AlignRecipe(steps=6, batch_size=16), progress=False)
    np.testing.assert_allclose(ours, log["losses"], rtol=1e-4)
