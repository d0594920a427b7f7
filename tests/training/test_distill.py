"""The pruning distillation recipe on the tiny world: the curriculum of eq. 12 per epoch, OneVision eq. 11's
KL against the frozen teacher, the student published as the served version with its lineage, and
a rerun reusing it."""

import shutil

import numpy as np
import torch
from typer.testing import CliRunner

from onevision.catalog.format import load_catalog
from onevision.eval.generative import searcher_for
from onevision.generator.losses import distill_kl_per_level
from onevision.generator.model import OneVisionGenerator
from onevision.generator.prompt.token_pruning import curriculum
from onevision.registry import current_version, load_version, publish, resolve_ref, trained_run, versions
from onevision_cli.main import app
from training.distill import DistillConfig, distill, ensure_distilled, preset_config
from training.generator import GeneratorRecipe
from training.offline_models import ensure_generator


def test_kl_is_zero_against_itself_and_positive_once_pruned(tiny_generator):
    version, data = tiny_generator
    teacher = OneVisionGenerator.load(version)
    ex, _ = data.evaluation("val")
    prompts, targets = ex.prompts(data.tokens, data.bank, slice(0, 16)), torch.from_numpy(ex.target[:16])
    with torch.no_grad():
        assert float(distill_kl_per_level(teacher, teacher, prompts, targets)) < 1e-6
    pruned = OneVisionGenerator.load(version)
    pruned.visual_keep = 1
    enc, mask = pruned.encode(prompts)
    full, _ = teacher.encode(prompts)
    assert enc.shape[1] == full.shape[1] - data.tokens.n_visual + 1 and mask.shape == enc.shape[:2]
    with torch.no_grad():
        assert float(distill_kl_per_level(pruned, teacher, prompts, targets)) > 1e-4


def test_curriculum_per_epoch_and_the_teacher_left_alone(tiny_generator, tmp_path):
    version, data = tiny_generator
    teacher = OneVisionGenerator.load(version)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = DistillConfig(epochs=3, batch_size=64, lr=5e-4, keep=4, max_examples=200)
    seen = []
    original = OneVisionGenerator.encode

    def spy(self, prompts):  # records how many visual tokens the student keeps while it trains
        if self.training:
            seen.append(self.n_visual_kept)
        return original(self, prompts)

    OneVisionGenerator.encode = spy
    try:
        student, log = distill(teacher, data, cfg, tmp_path / "run", progress=False)
    finally:
        OneVisionGenerator.encode = original
    expected = curriculum(data.tokens.n_visual, 4, 3)
    assert log["keep_schedule"] == expected and expected[-1] == 4
    per_epoch = int(np.ceil(200 / 64))
    assert seen == [k for k in expected for _ in range(per_epoch)]  # eq. 12, epoch by epoch
    assert student.visual_keep == 4 and np.isfinite(log["epoch_loss"]).all()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    no_curriculum = DistillConfig(epochs=2, keep=4, curriculum=False, loss="ntp", max_examples=64)
    _, flat = distill(teacher, data, no_curriculum, tmp_path / "flat", progress=False)
    assert flat["keep_schedule"] == [4, 4]
    # resumable: the finished checkpoint is loaded, not retrained
    again, log2 = distill(teacher, data, cfg, tmp_path / "run", progress=False)
    assert log2["losses"] == log["losses"]
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), student.state_dict().values()))


def test_cli_publishes_the_served_student_and_reruns_reuse_it(tiny_generator, tiny_tokenizers, tiny_world, tmp_path):
    version, data = tiny_generator
    registry, cache, _ = tiny_tokenizers
    mine = tmp_path / "registry"
    shutil.copytree(registry, mine)
    name = version.parent.name
    args = ["train", "distill", "--catalog", str(tiny_world), "--preset", "tiny", "--registry", str(mine),
            "--cache", str(cache), "--runs", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pruned generator (keeps 3 visual tokens" in result.output
    student = mine / name / current_version(mine, name)
    manifest, config = load_version(student)
    assert manifest["parent"] == version.name and config["trained_by"] == "distill" and config["visual_keep"] == 3
    assert manifest["metrics"]["stages"]["distill"]["keep_schedule"] == curriculum(data.tokens.n_visual, 3, 2)
    assert (student / "loss_distill.png").stat().st_size > 1000
    model = OneVisionGenerator.load(student)
    assert model.visual_keep == 3
    res = searcher_for(model, data).search(data.evaluation("test")[0].prompts(data.tokens, data.bank), beam=16)
    finite = np.isfinite(res.scores)
    assert finite[:, :10].all() and searcher_for(model, data).trie.contains(res.sids[finite]).all()
    # lineage: the trained run is the teacher; offline evaluation and a rerun both reuse what exists
    assert trained_run(student) == mine / name / version.name
    catalog = load_catalog(tiny_world)
    tokenizer = resolve_ref(config["tokenizer"], student)
    assert ensure_generator(catalog, tokenizer, mine, cache, tmp_path / "runs", GeneratorRecipe("tiny", name=name),
                            progress=False) == mine / name / version.name
    # the streaming DPO job's update of the student serves now: the student is still found, not redone
    update = publish(mine, name, {f: student / f for f in ("generator.safetensors", "item_embedding.safetensors")},
                     {**config, "trained_by": "dpo-stream"}, parent=student.name)
    n = len(versions(mine, name))
    found = ensure_distilled(catalog, name, mine, cache, tmp_path / "runs", preset_config("tiny"), progress=False)
    assert found == student
    assert len(versions(mine, name)) == n and current_version(mine, name) == update.name
