"""Recipe behind `eval offline`: every model its tables score, reused from the registry when it is
the same run and trained when missing (offline evaluation itself only evaluates).

- the VRQ and RQ-KMeans tokenizers (and, with the ablations, VRQ without business or category
  features);
- the MCA cascade's ranker (`mca-<catalog>`, fitted on the VRQ tokenizer's data);
- the generators: OneVision (all four stages), the RQ-KMeans generator (IRGen-like: the image alone,
  single-stage SFT) and the ablations (no user SIDs; VRQ without business / category features).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onevision.baselines.mca import registry_name as mca_name
from onevision.catalog.format import Catalog, catalog_fingerprint
from onevision.registry import current_for_catalog, current_version, read_version, resolve, trained_run
from training.generator import ALL_STAGES, GeneratorRecipe, generator_name, run_id, train_generator
from training.mca import train_mca
from training.point_in_time import point_in_time
from training.tokenizer import train_tokenizer


@dataclass(frozen=True)
class OfflineModels:
    """What `onevision.eval.offline.offline_report` scores: registry versions by role."""

    vrq: Path  # the tokenizer whose data (visual tokens, user context) every shared row reads
    rq_kmeans: Path
    mca: Path
    onevision: Path  # the trained run of the served model (never its distilled or DPO-updated descendants)
    rq_kmeans_single: Path  # IRGen-like: single-stage SFT from the image alone
    ablations: dict[str, Path] = field(default_factory=dict)  # row label -> trained run


def ensure_tokenizer(catalog: Catalog, method: str, registry: Path, cache: Path, preset: str,
                     without: str | None = None, progress: bool = True) -> Path:
    """The registry's current `tokenizer-<method>[-no-<without>]-<catalog>`, trained if missing."""
    tag = f"{method}-no-{without}" if without else method
    model = f"tokenizer-{tag}-{catalog.name}"
    version = current_for_catalog(registry, model, catalog_fingerprint(catalog))
    if version is not None:
        return version
    return train_tokenizer(catalog, method, registry, cache, preset=preset, progress=progress, without=without)[0]


def ensure_generator(catalog: Catalog, tokenizer: Path, registry: Path, cache: Path, runs: Path,
                     recipe: GeneratorRecipe, progress: bool = True) -> Path:
    """The registry's current `recipe.name` (default generator-<method>-<catalog>) if it is the same
    run (`training.generator.run_id`: catalog, tokenizer, recipe), else a new one."""
    name = recipe.name or generator_name(tokenizer)
    if current_version(registry, name):
        # CURRENT may be derived from the trained run: the distilled (pruned) model, or the
        # streaming DPO job's updates, which learn from live sessions whose photos include the
        # test split. Evaluate the trained run they descend from, never them.
        version = trained_run(resolve(name, registry))
        if read_version(version)[1].get("run_id") == run_id(catalog, tokenizer, recipe):
            return version
    return train_generator(catalog, tokenizer, registry, cache, runs, recipe, progress=progress)[0]


def ensure_mca(catalog: Catalog, tokenizer: Path, registry: Path, cache: Path, progress: bool = True) -> Path:
    """The registry's current `mca-<catalog>` if it was fitted on `tokenizer`'s data, else a new fit."""
    name = mca_name(catalog.name)
    if current_version(registry, name):
        version = resolve(name, registry)
        if Path(read_version(version)[1]["tokenizer"]).resolve() == Path(tokenizer).resolve():
            return version
    return train_mca(catalog, tokenizer, registry, cache, progress=progress)[0]


def offline_models(catalog: Catalog, registry: Path, cache: Path, runs: Path, preset: str = "small",
                   ablations: bool = True, progress: bool = True) -> OfflineModels:
    """Every model the offline tables score, in the order they are needed; sets the catalog's
    point-in-time item stats (`training.point_in_time`) that the report reads."""
    point_in_time(catalog, cache)
    vrq = ensure_tokenizer(catalog, "vrq", registry, cache, preset, progress=progress)
    mca = ensure_mca(catalog, vrq, registry, cache, progress)
    rqk = ensure_tokenizer(catalog, "rq-kmeans", registry, cache, preset, progress=progress)

    def generator(tokenizer: Path, stages: tuple[str, ...], suffix: str = "", **prompt) -> Path:
        recipe = GeneratorRecipe(preset, stages, name=generator_name(tokenizer) + suffix, **prompt)
        return ensure_generator(catalog, tokenizer, registry, cache, runs, recipe, progress)

    single = generator(rqk, ("sft",), "-single", image_sid="none", hints=0)
    ours = generator(vrq, ALL_STAGES)
    rows: dict[str, Path] = {}
    if ablations:
        rows["OneVision w/o user SIDs"] = generator(vrq, ("pretrain", "sft"), "-no-user")
        for without in ("business", "category"):
            tok = ensure_tokenizer(catalog, "vrq", registry, cache, preset, without=without, progress=progress)
            rows[f"OneVision w/o {without} features"] = generator(tok, ALL_STAGES)
    return OfflineModels(vrq, rqk, mca, ours, single, rows)
