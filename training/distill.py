"""Recipe `train distill`: the pruned generator that serving runs (OneVision 3.3, eqs. 11-12).

The teacher is a frozen post-trained generator (the trained run of `train all`); the student
starts as a copy of it whose encoder output keeps only V_sub of the prompt's V_max visual tokens
(`generator/prompt/token_pruning.py`: k-means++ over the visual tokens, the token nearest each
centre). The student learns to match the teacher's next-code distribution at every SID level,

    L_dis = sum_k KL(pi_ref(t_k | u, t_<k) || pi_theta(t_k | u, t_<k))       (eq. 11)

(`losses.distill_kl_per_level`; OneSearch's eq. 11 is a different loss), teacher-forced along
each example's target SID, on the personalized SFT examples (photos with their request-time user
features: the inputs the teacher was post-trained on). With the curriculum, epoch e keeps
v(e) = floor(V_max - e/E (V_max - V_sub)) tokens (eq. 12), so the student loses visual tokens
gradually and ends at V_sub. The ablations of the pruning benchmark are options:
`curriculum=False` prunes to V_sub from the first epoch, and `loss="ntp"` fine-tunes the pruned
model on the targets' next-token loss (eq. 9) with no teacher.

Published as a new version of the teacher's model (parent: the teacher, `trained_by: distill`,
`visual_keep`), so it becomes CURRENT and serving, which follows CURRENT, hot-swaps it in.
Checkpoints live under `<runs>/<model>/distill-<id>/`, where the id fingerprints the teacher's
files and the config, so an interrupted run resumes and a finished one is reused.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from onevision.catalog.format import Catalog, load_catalog
from onevision.generator.data import GeneratorData, data_for_version, fingerprint
from onevision.generator.losses import distill_kl_per_level
from onevision.generator.model import OneVisionGenerator
from onevision.generator.prompt.token_pruning import curriculum
from onevision.registry import lineage, read_version, resolve, trained_run
from training.configs import ParallelConfig
from training.distributed import ray_storage, record_weights, train_on_ray
from training.loop import StageConfig, run_stage
from training.point_in_time import point_in_time
from training.runtime import Runtime, current, use_runtime
from training.sft import batch_ntp_loss

LOSSES = ("kl", "ntp")


@dataclass(frozen=True)
class DistillConfig(StageConfig):
    keep: int = 3  # V_sub: visual tokens the served model keeps (of the prompt's V_max = 17)
    curriculum: bool = True  # eq. 12; False prunes to V_sub from the first epoch
    loss: str = "kl"  # "kl": eq. 11 against the teacher; "ntp": the targets' next-token loss, no teacher
    max_examples: int = 0  # a seeded subset of the personalized examples (0: all of them)


PRESETS = {"tiny": DistillConfig(epochs=2, batch_size=64, lr=5e-4, keep=3),
           "small": DistillConfig(epochs=4, batch_size=128, lr=3e-4, keep=3, max_examples=12_000),
           "quick": DistillConfig(epochs=2, batch_size=128, lr=3e-4, keep=3, max_examples=12_000)}


def preset_config(preset: str, **overrides) -> DistillConfig:
    return DistillConfig(**{**asdict(PRESETS.get(preset, PRESETS["small"])), **overrides})


def schedule(v_max: int, config: DistillConfig) -> list[int]:
    """Visual tokens kept in each epoch: eq. 12's curriculum, or V_sub throughout."""
    return curriculum(v_max, config.keep, config.epochs) if config.curriculum else [config.keep] * config.epochs


def distill(teacher: OneVisionGenerator, data: GeneratorData, config: DistillConfig, workdir: Path,
            progress: bool = True) -> tuple[OneVisionGenerator, dict]:
    """Train the pruned student from `teacher` (left unchanged); resumable from `workdir`."""
    if config.loss not in LOSSES:
        raise ValueError(f"unknown distillation loss {config.loss!r}; choose from {', '.join(LOSSES)}")
    v_max = teacher.tokens.n_visual
    keep_at = schedule(v_max, config)  # validates 1 <= keep <= V_max
    teacher = teacher.to(current().torch_device).eval().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True)
    ex = data.personalized(config.seed)
    if config.max_examples and len(ex) > config.max_examples:
        ex = ex.take(np.sort(np.random.default_rng(config.seed).choice(len(ex), config.max_examples, replace=False)))

    def on_epoch(epoch: int) -> None:
        student.visual_keep = keep_at[epoch]

    def loss_fn(idx: np.ndarray) -> torch.Tensor:
        if config.loss == "ntp":
            return batch_ntp_loss(student, data, ex, idx)
        prompts = ex.prompts(data.tokens, data.bank, idx)
        return distill_kl_per_level(student, teacher, prompts, torch.from_numpy(ex.target[idx]))

    log = run_stage("distill", student, len(ex), loss_fn, config, workdir, progress, on_epoch=on_epoch)
    student.visual_keep = config.keep
    return student.eval(), {**log, "keep_schedule": keep_at, "v_max": v_max, "examples": len(ex)}


def distill_id(teacher_version: Path, config: DistillConfig) -> str:
    return fingerprint(read_version(teacher_version)[0]["files"], sorted(asdict(config).items()))


def distill_task(args: dict) -> None:
    """A Ray Train worker's part of `train distill` (`training.distributed`)."""
    catalog = load_catalog(Path(args["catalog"]))
    cache = Path(args["cache"])
    point_in_time(catalog, cache)
    teacher_version = Path(args["teacher"])
    data = data_for_version(catalog, teacher_version, cache, progress=False)
    config = DistillConfig(**args["config"])
    student, _ = distill(OneVisionGenerator.load(teacher_version), data, config, Path(args["workdir"]),
                         current().progress)
    record_weights(student, ray_storage(Path(args["workdir"])) / "ranks")


def distill_generator(catalog: Catalog, teacher_version: Path, registry: Path, cache: Path, runs: Path,
                      config: DistillConfig, progress: bool = True, make_current: bool = True,
                      parallel: ParallelConfig = ParallelConfig()) -> tuple[Path, dict]:
    """Distill the pruned student of `teacher_version` and publish it as the model's next version
    (data-parallel on Ray Train first with `parallel.workers` > 1, as `train_generator` does)."""
    with use_runtime(Runtime(parallel.device, parallel.precision, progress)):
        return _distill_and_publish(catalog, teacher_version, registry, cache, runs, config, progress, make_current,
                                    parallel)


def _distill_and_publish(catalog: Catalog, teacher_version: Path, registry: Path, cache: Path, runs: Path,
                         config: DistillConfig, progress: bool, make_current: bool,
                         parallel: ParallelConfig) -> tuple[Path, dict]:
    from onevision.eval.generative import evaluate_generator, searcher_for
    from training.generator import publish_derived

    t0 = time.perf_counter()
    point_in_time(catalog, cache)
    teacher_version = Path(teacher_version)
    teacher = OneVisionGenerator.load(teacher_version)  # its files checked
    data = data_for_version(catalog, teacher_version, cache, progress)
    run = distill_id(teacher_version, config)
    workdir = Path(runs) / teacher_version.parent.name / f"distill-{run}"
    distributed = None
    if parallel.distributed:
        args = {"catalog": str(catalog.root.resolve()), "cache": str(Path(cache).resolve()),
                "teacher": str(teacher_version.resolve()), "config": asdict(config),
                "workdir": str(workdir.resolve())}
        distributed = train_on_ray("training.distill:distill_task", args, parallel, workdir, "distill")
    student, log = distill(teacher, data, config, workdir, progress)  # resumes; loads what Ray trained
    val, q = data.evaluation("val")
    searcher = searcher_for(student, data)
    scores = {}
    for name, model in (("teacher", teacher), ("student", student)):
        # the teacher is scored now, by the same searcher, so that the two compare
        scores[name] = evaluate_generator(model, data, val, q["kind"].to_numpy(), beam=10, searcher=searcher)["sets"]
    metrics = {"val": scores["student"], "teacher_val": scores["teacher"], "confidence_threshold": searcher.threshold,
               "train_seconds": round(time.perf_counter() - t0, 1),
               "stages": {"distill": {"epochs": log["epoch"],
                                      "final_loss": log["epoch_loss"][-1] if log["epoch_loss"] else None,
                                      "seconds": round(log["seconds"], 1), "keep_schedule": log["keep_schedule"]}}}
    if distributed is not None:
        metrics["distributed"] = distributed
    (workdir / "training_log.json").write_text(json.dumps(log))
    files = {"training_log.json": workdir / "training_log.json"}
    if (workdir / "loss.png").is_file():
        files["loss_distill.png"] = workdir / "loss.png"
    version = publish_derived(registry, teacher_version, read_version(teacher_version)[1], student, "distill", metrics,
                              {"distill": asdict(config), "distill_id": run}, files, make_current)
    return version, metrics


def ensure_distilled(catalog: Catalog, model: str, registry: Path, cache: Path, runs: Path, config: DistillConfig,
                     progress: bool = True) -> Path:
    """The student of this config distilled from the trained run CURRENT derives from: found in
    CURRENT's lineage (CURRENT itself, or the student the streaming DPO job has updated since),
    else distilled now and made CURRENT."""
    current = resolve(model, registry)
    teacher = trained_run(current)
    run = distill_id(teacher, config)
    for version in lineage(current):
        found = read_version(version)[1]  # the DPO job's updates copy the student's config: check who trained it
        if found.get("trained_by") == "distill" and found.get("distill_id") == run:
            return version
    return distill_generator(catalog, teacher, registry, cache, runs, config, progress)[0]
