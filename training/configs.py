"""The recipes' and jobs' configs, in a module that imports nothing heavy: the CLI reads its
defaults from them at start-up without loading torch, Kafka or the models."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onevision.generator.rank.title_lift import LiftConfig  # numpy only
from streaming.groups import DPO_GROUP  # the near-streaming DPO job's consumer group (an import-light module)

ALL_STAGES = ("pretrain", "sft", "personalized-sft", "dpo")  # the generator's stages, in order
# the prompt's image SIDs: the SIDs of the photo's 8 nearest catalog items (see generator/prompt/image_sids.py
# and docs/architecture.md for why not the tokenizer's own quantization of the photo)
IMAGE_SID, HINTS = "nearest-item", 8


@dataclass(frozen=True)
class GeneratorRecipe:
    """What `train all` trains: the preset (model size and stage lengths), the stages in order, the
    seed, the registry name (default generator-<method>-<catalog>) and the prompt's options."""

    preset: str = "small"
    stages: tuple[str, ...] = ALL_STAGES
    seed: int = 0
    name: str | None = None
    image_sid: str = IMAGE_SID  # nearest-item | tokenizer | none
    hints: int = HINTS  # image SIDs in the prompt
    hint_similarity: bool = True  # the model also reads each hint's cosine to the photo
    sid_content: bool = True  # every SID slot also carries its items' V embedding


@dataclass(frozen=True)
class ParallelConfig:
    """Where a recipe trains: `workers` data-parallel Ray Train workers (1: this process, no Ray),
    on a local Ray or the cluster at `address`, each on `device` with `cpus_per_worker` CPUs."""

    workers: int = 1
    address: str | None = None  # an existing Ray cluster (ray://host:10001 or host:6379); None: a local Ray
    device: str = "cpu"  # auto | cpu | cuda: with cuda each worker takes one GPU (NCCL), else gloo on CPUs
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (mixed precision on GPUs only)
    cpus_per_worker: int = 1

    @property
    def distributed(self) -> bool:
        return self.workers > 1 or self.address is not None


@dataclass(frozen=True)
class GateConfig:
    """The DPO job's eval gate."""

    orders: int = 300  # held-out ORDER queries scored (all of them when fewer)
    canary: int = 200  # catalog images of the canary set
    tolerance: float = 2.0  # ORDER HR@4 points a candidate may lose against its reference
    canary_tolerance: float = 2.0  # canary HR@1 points
    beam: int = 10
    seed: int = 0


@dataclass(frozen=True)
class StreamConfig:
    """The near-streaming DPO job's updates."""

    group: str = DPO_GROUP  # consumer group; also names this job's versions in the registry
    micro_batch: int = 32  # examples per update ...
    max_wait_s: float = 15.0  # ... or this long after the first of them arrived
    # a job that has fallen behind (sessions already on the topic when a micro-batch falls due) takes
    # them into the same version, up to this many examples: the gate and publishing cost the same per
    # version, so a larger update spreads them and the backlog drains; <= micro_batch turns it off
    catch_up_batch: int = 128
    steps: int = 4  # AdamW steps per micro-batch
    lr: float = 5e-5
    beta: float = 0.1
    nll_weight: float = 1.0  # OneSearch eq. 11; 0 = pure eq. 10
    max_negatives: int = 8
    replay: int = 512  # examples the bounded replay buffer keeps
    replay_batch: int = 32  # replayed examples added to each step
    seed: int = 0
    gate: GateConfig = field(default_factory=GateConfig)
    # what sells now (`onevision.generator.rank.title_lift`): refitted every micro-batch on the newest
    # lift_window purchase sessions and published with the version; with fewer than lift_min_sessions
    # (after a start) the reference's lift is kept; lift_keep_beta: the similarity's coefficient is the
    # reference lift's (fitted once per lineage, on lists no lift had ordered), not refitted
    lift: bool = True
    lift_window: int = 2000
    lift_min_sessions: int = 200
    lift_keep_beta: bool = True
    lift_fit: LiftConfig = field(default_factory=LiftConfig)
    # one job per model (`ov:dpo-lease:<model>` in Redis), renewed every round; a holder that dies loses
    # it after lease_ttl_s. A second copy waits lease_wait_s for it, long enough by default to take over
    # from a crashed predecessor (a supervisor's restart), then exits naming the holder.
    lease_ttl_s: float = 30.0
    lease_wait_s: float = 45.0
    # the join of sessions with their request contexts (`streaming.request_log.ContextJoin`): contexts
    # newer than the newest one read minus join_window_s, at most max_contexts of them
    join_window_s: float = 3600.0
    max_contexts: int = 50_000


@dataclass
class DPOStreamRun:
    """One DPO job process: what it reads and publishes to, its config and how it runs."""

    catalog: Path
    registry: Path
    model: str  # the registry model to improve and publish to
    cache: Path
    config: StreamConfig = field(default_factory=StreamConfig)
    max_idle_s: float | None = None  # exit after this long without sessions (None: run until stopped)
    threads: int = 1  # torch threads (the job shares the machine with serving)
    device: str = "cpu"  # auto | cpu | cuda: where the policy, its reference and the gate run
    log_level: str = "INFO"
