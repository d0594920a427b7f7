"""Recipe: every catalog image through the aligned encoder V with Ray Data, streamed to Parquet.

The images are the ones the generator's image bank holds (`onevision.generator.data.image_bank`):
item images, item views, then query photos, in that order. A `ray.data` dataset of their paths
goes through `map_batches` on a fixed actor pool (`workers` actors, each `cpus_per_worker` CPUs
and as many torch threads, loading V once); the driver gathers the rows of each fixed-size chunk
and writes it as one Parquet shard, `<cache>/<catalog key>/encoded-<weights sha16>/part-NNNNN.parquet`
(columns `path`, `row`, `tokens`: V's grid flattened, float16, `embedding`: float32), through a
temporary name and a rename. A rerun skips every shard whose paths are the ones its chunk holds
(resumable: only missing or stale shards are encoded). `manifest.json` beside the shards records
the run (counts, seconds, items/s).

The shards then become the caches later stages read, so nothing encodes the images again:
`visual-<sha16>.safetensors` (`onevision.encoders.visual_tokens.cached_tokens`, same keys, order and
dtypes) and, unless asked not to, the tokenizer's `CatalogFeatures` (`training.tokenizer.ensure_features`;
its image embeddings are the same V embeddings of the same images).

Ray: `address=None` starts a local Ray with `workers x cpus_per_worker` CPUs and shuts it down after;
an address joins that cluster (whose workers must import this package and read the catalog's and the
cache's paths: a shared file system). A Ray already started in this process is used as it is.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onevision.catalog.format import Catalog, catalog_key
from onevision.encoders.base import ImageEncoder
from onevision.encoders.visual_tokens import VisualTokens, cache_holds, save_tokens
from onevision.generator.data import bank_paths, visual_cache, weights_sha

MANIFEST = "manifest.json"
SHARD = "part-{:05d}.parquet"
BATCH = 64  # images per map_batches call (what the single-process encoder batches too)


def encoded_dir(catalog: Catalog, encoder_version: Path, cache: Path) -> Path:
    return Path(cache) / catalog_key(catalog) / f"encoded-{weights_sha(encoder_version)}"


@dataclass
class ShardRun:
    """What one `encode_paths` call did."""

    out: Path  # the shard folder
    n_images: int
    n_shards: int
    encoded_shards: list[int]  # the shards this run encoded (the rest were already there)
    encoded_images: int
    seconds: float  # encoding: from the dataset's start (actors starting included) to its last shard written
    items_per_second: float  # encoded_images / seconds (0 when nothing was left to encode)
    ray_start_seconds: float  # ray.init (0 when Ray was already up or nothing was left to encode)
    first_output_seconds: float  # from the dataset's start to its first encoded batch (actors starting)
    workers: int
    cpus_per_worker: float
    address: str | None


@dataclass
class EncodeRun(ShardRun):
    visual_cache: Path | None = None  # the file `image_bank` reads
    features: Path | None = None  # the tokenizer's CatalogFeatures file (None: not asked for)

    def manifest(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


class VEncoder:
    """The map_batches callable: one per actor, V loaded once; a batch of paths -> grid tokens
    (float16, as the cache stores them) and embeddings (float32)."""

    def __init__(self, encoder_version: str, root: str, threads: int):
        import torch

        from onevision.encoders.aligned import AlignedEfficientNet

        torch.set_num_threads(max(1, threads))
        self.model = AlignedEfficientNet.load(encoder_version)
        self.root = Path(root)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from onevision.encoders.visual_tokens import encode_images
        from onevision.images import load_rgb

        images = [load_rgb(self.root / str(p)) for p in batch["path"]]
        out = encode_images(self.model, images, batch_size=len(images))
        return {"shard": batch["shard"], "row": batch["row"], "tokens": out.tokens, "embedding": out.embedding}


def encode_catalog(catalog: Catalog, encoder_version: Path, cache: Path, workers: int = 2, chunk: int = 512,
                   address: str | None = None, cpus_per_worker: float = 1.0, features: bool = True,
                   progress: bool = True) -> EncodeRun:
    """Encode the catalog's images with Ray Data into shards (module doc), then write the caches.
    Returns what the run did; its manifest is also `<out>/manifest.json`."""
    encoder_version = Path(encoder_version)
    paths = bank_paths(catalog)
    shards = encode_paths(catalog.root, paths, encoder_version, encoded_dir(catalog, encoder_version, cache),
                          workers, chunk, address, cpus_per_worker, progress)
    tokens = read_shards(shards.out, shards.n_shards)
    vis = visual_cache(catalog, encoder_version, cache)
    if shards.encoded_shards or not cache_holds(vis, paths):
        save_tokens(vis, tokens, paths)
    feat = fill_features(catalog, encoder_version, cache, tokens.embedding, paths, progress) if features else None
    run = EncodeRun(**asdict(shards), visual_cache=vis, features=feat)
    manifest = {"catalog": catalog.name, "catalog_key": catalog_key(catalog), "encoder": str(encoder_version),
                "weights_sha": weights_sha(encoder_version), "chunk": chunk, **run.manifest()}
    tmp = shards.out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(shards.out / MANIFEST)
    return run


def encode_paths(root: Path, paths: Sequence[str], encoder_version: Path, out: Path, workers: int = 2,
                 chunk: int = 512, address: str | None = None, cpus_per_worker: float = 1.0,
                 progress: bool = True) -> ShardRun:
    """Images `root / path` in shards of `chunk` under `out`; the shards already there are kept."""
    if workers < 1 or chunk < 1:
        raise ValueError(f"workers and chunk must be at least 1 (got {workers}, {chunk})")
    out.mkdir(parents=True, exist_ok=True)
    shards = [list(paths[s:s + chunk]) for s in range(0, len(paths), chunk)]
    for stale in set(out.glob("part-*.parquet")) - {out / SHARD.format(k) for k in range(len(shards))}:
        stale.unlink()  # from a run with another chunk size
    todo = [k for k, names in enumerate(shards) if not _shard_holds(out / SHARD.format(k), names)]
    seconds = ray_start = first = 0.0
    if todo:
        import ray

        t0 = time.perf_counter()
        started = not ray.is_initialized()
        if started and address is None:
            ray.init(address="local", num_cpus=math.ceil(workers * cpus_per_worker), include_dashboard=False,
                     log_to_driver=False)
        elif started:
            ray.init(address=address, log_to_driver=False)
        try:
            ray_start = time.perf_counter() - t0
            t1 = time.perf_counter()
            first = _encode_shards(Path(root), encoder_version, out, shards, todo, chunk, workers, cpus_per_worker,
                                   progress) - t1
            seconds = time.perf_counter() - t1
        finally:
            if started:
                ray.shutdown()
    encoded = sum(len(shards[k]) for k in todo)
    return ShardRun(out, len(paths), len(shards), todo, encoded, round(seconds, 2),
                    round(encoded / seconds, 1) if seconds else 0.0, round(ray_start, 2), round(first, 2), workers,
                    cpus_per_worker, address)


def _encode_shards(root: Path, encoder_version: Path, out: Path, shards: list[list[str]], todo: list[int],
                   chunk: int, workers: int, cpus_per_worker: float, progress: bool) -> float:
    """Encode and write the shards `todo`; the perf_counter time the first batch came back."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    rows = [{"shard": k, "row": k * chunk + i, "path": p} for k in todo for i, p in enumerate(shards[k])]
    encoded = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / BATCH))).map_batches(
        VEncoder, batch_size=BATCH, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker, fn_constructor_kwargs={"encoder_version": str(encoder_version), "root": str(root),
                                                         "threads": max(1, int(cpus_per_worker))})
    pending: dict[int, _Shard] = {}
    first = 0.0
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        first = first or time.perf_counter()
        for k in map(int, np.unique(batch["shard"])):
            mine = batch["shard"] == k
            shard = pending.setdefault(k, _Shard(shards[k], k * chunk))
            if shard.add(batch["row"][mine], batch["tokens"][mine], batch["embedding"][mine]):
                shard.write(out / SHARD.format(k))
                del pending[k]
    if pending:
        raise RuntimeError(f"Ray Data returned incomplete shards {sorted(pending)}")
    return first


class _Shard:
    """The rows of one chunk as they arrive, in any order."""

    def __init__(self, paths: list[str], first_row: int):
        self.paths, self.first_row = paths, first_row
        self.tokens: np.ndarray | None = None
        self.embedding: np.ndarray | None = None
        self.seen = np.zeros(len(paths), bool)

    def add(self, rows: np.ndarray, tokens: np.ndarray, embedding: np.ndarray) -> bool:
        """Store the rows; True once every row of the chunk is in."""
        if self.tokens is None or self.embedding is None:
            self.tokens = np.empty((len(self.paths), *tokens.shape[1:]), np.float16)
            self.embedding = np.empty((len(self.paths), embedding.shape[1]), np.float32)
        at = rows - self.first_row
        self.tokens[at], self.embedding[at], self.seen[at] = tokens, embedding, True
        return bool(self.seen.all())

    def write(self, path: Path) -> None:
        assert self.tokens is not None and self.embedding is not None
        n, t, c = self.tokens.shape
        table = pa.table({
            "path": pa.array(self.paths, pa.string()),
            "row": pa.array(np.arange(n, dtype=np.int64) + self.first_row),
            "tokens": pa.FixedSizeListArray.from_arrays(pa.array(self.tokens.reshape(-1)), t * c),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(self.embedding.reshape(-1)),
                                                           self.embedding.shape[1]),
        }).replace_schema_metadata({"tokens_shape": json.dumps([t, c])})
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)


def _shard_holds(path: Path, names: Sequence[str]) -> bool:
    """A finished shard of exactly these images (a truncated or foreign file is not)."""
    if not path.is_file():
        return False
    try:
        return pq.read_table(path, columns=["path"]).column("path").to_pylist() == list(names)
    except (pa.ArrowException, OSError):
        return False


def read_shards(out: Path, n_shards: int) -> VisualTokens:
    """All shards in order as the bank's arrays: (N, T, C) float16 tokens, (N, D) float32 embeddings."""
    toks, embs = [], []
    for k in range(n_shards):
        table = pq.read_table(out / SHARD.format(k))
        t, c = json.loads(table.schema.metadata[b"tokens_shape"])
        toks.append(_values(table, "tokens").astype(np.float16, copy=False).reshape(-1, t, c))
        embs.append(_values(table, "embedding").astype(np.float32, copy=False).reshape(table.num_rows, -1))
    return VisualTokens(np.concatenate(toks), np.concatenate(embs))


def _values(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)


class _NoEncoding(ImageEncoder):
    """Refuses to encode: every image the features need is already encoded."""

    name = "aligned"

    def __init__(self, dim: int):
        self.dim = dim

    def encode_arrays(self, images: Sequence) -> np.ndarray:
        raise RuntimeError("an image missing from the encoded shards was asked for")


def fill_features(catalog: Catalog, encoder_version: Path, cache: Path, embedding: np.ndarray,
                  keys: Sequence[str], progress: bool = True) -> Path:
    """The tokenizer's CatalogFeatures file from the encoded embeddings (left as it is when there):
    the point-in-time business stats and the category text are computed as `ensure_features` does,
    the images are not encoded again."""
    from onevision.tokenizers.inputs import build_features
    from training.point_in_time import point_in_time
    from training.tokenizer import PrecomputedEncoder, features_cache

    path = features_cache(catalog, encoder_version, cache)
    if path.is_file():
        return path
    point_in_time(catalog, cache)
    known = {str(catalog.path(k)): v for k, v in zip(keys, embedding)}
    build_features(catalog, PrecomputedEncoder(_NoEncoding(embedding.shape[1]), known), progress=progress).save(path)
    return path
