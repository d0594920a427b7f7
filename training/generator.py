"""Recipe `train all`: pretrain -> SFT -> personalized SFT -> DPO, then publish the generator.

Each stage starts from the previous stage's weights and checkpoints under
`<runs>/<model>/<run id>/<stage>/` (`run_id` fingerprints catalog, tokenizer, preset, stages, seed
and prompt options), so an interrupted `train all` resumes where it stopped and a finished stage is
loaded, not retrained. The result is published as `generator-<method>-<catalog>` (or the
given name) with the stage logs, loss curves and validation metrics.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from onevision.catalog.format import Catalog, catalog_fingerprint, load_catalog
from onevision.generator.data import GeneratorData, fingerprint, load_generator_data
from onevision.generator.model import OneVisionGenerator
from onevision.registry import load_version, publish
from training import dpo, personalized_sft, pretrain, sft
from training.configs import ALL_STAGES, GeneratorRecipe, ParallelConfig
from training.distributed import ray_storage, record_weights, train_on_ray
from training.point_in_time import point_in_time
from training.runtime import Runtime, current, use_runtime

STAGES = dict(zip(ALL_STAGES, (pretrain, sft, personalized_sft, dpo)))
ITEM_EMBEDDING = "item_embedding.safetensors"  # V's embedding of each item (tokenizer order), for the confidence flag
MODEL_PRESET = {"tiny": "tiny", "small": "small", "quick": "small", "paper": "paper"}


def stage_config(stage: str, preset: str, seed: int):
    presets = STAGES[stage].PRESETS
    cfg = presets.get(preset, presets["small"])
    return type(cfg)(**{**asdict(cfg), "seed": seed})


def generator_name(tokenizer_version: Path) -> str:
    model = Path(tokenizer_version).parent.name  # tokenizer-<method>-<catalog>
    return "generator-" + model.removeprefix("tokenizer-")


def train_stages(data: GeneratorData, preset: str, stages: tuple[str, ...], workdir: Path, seed: int = 0,
                 progress: bool = True) -> tuple[OneVisionGenerator, dict]:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    torch.manual_seed(seed)
    model = OneVisionGenerator(data.tokens, MODEL_PRESET.get(preset, "small")).to(current().torch_device)
    logs = {}
    for stage in stages:
        logs[stage] = STAGES[stage].run(model, data, stage_config(stage, preset, seed), workdir / stage, progress)
    return model, logs


def run_id(catalog: Catalog, tokenizer_version: Path, recipe: GeneratorRecipe) -> str:
    """Everything that decides a trained generator, hashed: its checkpoints live under it (a rerun
    resumes) and its published config records it (`ensure_generator` reuses only the same run)."""
    r = recipe
    # each stage's length and rates too: a changed preset trains anew instead of loading old checkpoints
    stages = tuple(sorted(asdict(stage_config(s, r.preset, r.seed)).items()) for s in r.stages if s in STAGES)
    return fingerprint(catalog_fingerprint(catalog), load_version(tokenizer_version)[0]["files"], r.preset,
                       tuple(r.stages), r.seed, r.image_sid, r.hints, r.hint_similarity, r.sid_content, stages)


def _recipe_data(catalog: Catalog, tokenizer_version: Path, cache: Path, recipe: GeneratorRecipe,
                 progress: bool) -> GeneratorData:
    return load_generator_data(catalog, tokenizer_version, cache, progress=progress, image_sid=recipe.image_sid,
                               hints=recipe.hints, hint_similarity=recipe.hint_similarity,
                               sid_content=recipe.sid_content)


def stages_task(args: dict) -> None:
    """A Ray Train worker's part of `train all` (`training.distributed`): the same data from the
    caches the driver filled, the same stages, on this worker's rank."""
    catalog = load_catalog(Path(args["catalog"]))
    cache = Path(args["cache"])
    point_in_time(catalog, cache)
    recipe = GeneratorRecipe(**{**args["recipe"], "stages": tuple(args["recipe"]["stages"])})
    data = _recipe_data(catalog, Path(args["tokenizer_version"]), cache, recipe, progress=False)
    model, _ = train_stages(data, recipe.preset, recipe.stages, Path(args["workdir"]), recipe.seed,
                            current().progress)
    record_weights(model, ray_storage(Path(args["workdir"])) / "ranks")


def train_generator(catalog: Catalog, tokenizer_version: Path, registry: Path, cache: Path, runs: Path,
                    recipe: GeneratorRecipe = GeneratorRecipe(), progress: bool = True,
                    parallel: ParallelConfig = ParallelConfig()) -> tuple[Path, dict]:
    """Run the stages and publish; returns the registry version and its validation metrics. With
    `parallel.workers` > 1 (or a cluster address) the stages run data-parallel on Ray Train first;
    this process then loads their finished checkpoints, evaluates and publishes (on
    `parallel.device`)."""
    with use_runtime(Runtime(parallel.device, parallel.precision, progress)):
        return _train_and_publish(catalog, tokenizer_version, registry, cache, runs, recipe, progress, parallel)


def _train_and_publish(catalog: Catalog, tokenizer_version: Path, registry: Path, cache: Path, runs: Path,
                       recipe: GeneratorRecipe, progress: bool, parallel: ParallelConfig) -> tuple[Path, dict]:
    from onevision.eval.generative import catalog_embedding, evaluate_generator, searcher_for

    t0 = time.perf_counter()
    point_in_time(catalog, cache)  # val queries' items ordered by the stats known at their time
    preset, stages, seed, name = recipe.preset, tuple(recipe.stages), recipe.seed, recipe.name
    data = _recipe_data(catalog, tokenizer_version, cache, recipe, progress)
    name = name or generator_name(tokenizer_version)
    tok_manifest, _ = load_version(tokenizer_version)
    run = run_id(catalog, tokenizer_version, recipe)
    workdir = runs / name / run
    distributed = None
    if parallel.distributed:
        # absolute paths: a worker's working directory is not this one
        args = {"catalog": str(catalog.root.resolve()), "tokenizer_version": str(Path(tokenizer_version).resolve()),
                "cache": str(Path(cache).resolve()), "recipe": {**asdict(recipe), "stages": list(stages)},
                "workdir": str(Path(workdir).resolve())}
        distributed = train_on_ray("training.generator:stages_task", args, parallel, workdir, "train-all")
    model, logs = train_stages(data, preset, stages, workdir, seed, progress)  # resumes; loads what Ray trained
    val, q = data.evaluation("val")
    searcher = searcher_for(model, data)
    metrics = {"val": evaluate_generator(model, data, val, q["kind"].to_numpy(), beam=10, searcher=searcher)["sets"],
               "confidence_threshold": searcher.threshold, "train_seconds": round(time.perf_counter() - t0, 1),
               "stages": {s: {"epochs": log["epoch"],
                              "final_loss": log["epoch_loss"][-1] if log["epoch_loss"] else None,
                              "seconds": round(log["seconds"], 1)} for s, log in logs.items()}}
    if distributed is not None:
        metrics["distributed"] = distributed
    config = {**model.config(), "tokenizer": str(tokenizer_version), "tokenizer_files": tok_manifest["files"],
              "catalog": catalog.name, "stages": list(stages), "image_sid": recipe.image_sid,
              "seed": seed, "training_preset": preset, "run_id": run}
    with tempfile.TemporaryDirectory() as tmp:
        files = model.save(Path(tmp))
        for stage in stages:
            png = workdir / stage / "loss.png"
            if png.is_file():
                files[f"loss_{stage}.png"] = shutil.copy(png, Path(tmp) / f"loss_{stage}.png")
        # the float32 embeddings (a large catalog's index holds float16 copies)
        save_file({"embedding": np.ascontiguousarray(catalog_embedding(data), np.float32)},
                  str(Path(tmp) / ITEM_EMBEDDING))
        files[ITEM_EMBEDDING] = Path(tmp) / ITEM_EMBEDDING
        log_path = Path(tmp) / "training_log.json"
        log_path.write_text(json.dumps(logs))
        files["training_log.json"] = log_path
        version = publish(registry, name, files, config, metrics)
    return version, metrics


def publish_derived(registry: Path, parent: Path, parent_config: dict, model: OneVisionGenerator, trained_by: str,
                    metrics: dict, config_extra: dict | None = None, files: dict[str, Path] | None = None,
                    make_current: bool = True, extra: dict | None = None) -> Path:
    """Publish `model`, trained from the version `parent`, as the next version of the same registry
    model: its weights, the parent's item embeddings (same catalog, same V) and the parent's config
    with the model's own, `trained_by` (what `registry.trained_run` walks back past) and
    `config_extra`; `files` adds others (name -> path)."""
    parent = Path(parent)
    config = {**parent_config, **model.config(), "trained_by": trained_by, **(config_extra or {})}
    with tempfile.TemporaryDirectory() as tmp:
        out = {**model.save(Path(tmp)), ITEM_EMBEDDING: parent / ITEM_EMBEDDING, **(files or {})}
        return publish(registry, parent.parent.name, out, config, metrics, parent=parent.name,
                       make_current=make_current, extra=extra)
