"""Experiment assignment: which variant serves a user, compatible with GrowthBook's SDKs.

A team that already buckets users with GrowthBook gets the same split here: the four
primitives follow the GrowthBook SDK specification (hash versions 1 and 2 over FNV-1a 32,
bucket ranges with coverage and weights, namespaces) and are tested against its published
cases (`tests/serving/test_experiments.py`).

On top of them, a YAML config (`serving/experiments.yaml`) of layers, each a GrowthBook
namespace: the experiments of a layer take disjoint slices of it, so a user is in at most one
of them; each experiment has its own seed (salt), coverage, weights and variants mapped to
served model versions. A holdout keeps a share of users on the default variant everywhere,
and forced variants pin QA users. The assignment is logged with every exposure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator

DEFAULT_EXPERIMENTS = Path(__file__).with_name("experiments.yaml")
WEIGHT_SUM_RANGE = (0.99, 1.01)  # the spec's tolerance; outside it, weights fall back to equal


def fnv1a32(text: str) -> int:
    """FNV-1a 32 over the string's UTF-16 code units, as the JS SDK's `charCodeAt` loop does."""
    h = 0x811C9DC5
    data = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | data[i + 1] << 8)) * 0x01000193) & 0xFFFFFFFF
    return h


def hash(seed: str, value: str, version: int) -> float | None:  # noqa: A001 - the spec's name
    """A user's position in [0, 1): v2 = fnv(str(fnv(seed + value))) % 10000 / 10000 (4 decimals),
    v1 = fnv(value + seed) % 1000 / 1000 (3 decimals, biased, kept for old experiments);
    None for an unknown version."""
    if version == 2:
        return fnv1a32(str(fnv1a32(seed + value))) % 10000 / 10000
    if version == 1:
        return fnv1a32(value + seed) % 1000 / 1000
    return None


def get_bucket_ranges(num_variations: int, coverage: float = 1.0,
                      weights: list[float] | None = None) -> list[tuple[float, float]]:
    """Each variation's [start, end) in [0, 1): variation i owns the start of its weight's slice,
    `coverage` of it. Coverage is clamped to [0, 1]; weights of the wrong length or not summing
    to about 1 are replaced by equal weights."""
    coverage = min(max(coverage, 0.0), 1.0)
    if (weights is None or len(weights) != num_variations or any(w < 0 for w in weights)
            or not WEIGHT_SUM_RANGE[0] <= sum(weights) <= WEIGHT_SUM_RANGE[1]):
        weights = [1.0 / num_variations] * num_variations if num_variations > 0 else []
    ranges, cumulative = [], 0.0
    for w in weights:
        ranges.append((cumulative, cumulative + coverage * w))
        cumulative += w
    return ranges


def choose_variation(n: float, ranges: list[tuple[float, float]]) -> int:
    """The variation whose range holds `n`, or -1 (not in the experiment)."""
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(user_id: str, namespace: tuple[str, float, float]) -> bool:
    """Whether the user falls in the namespace's [start, end) (hash v1 with seed `__<name>`)."""
    n = hash("__" + namespace[0], user_id, 1)
    return n is not None and namespace[1] <= n < namespace[2]


class Variant(BaseModel):
    name: str
    method: str = "onevision"  # onevision | mca | mca-no-ranking (serving.variants)
    model: str | None = None  # registry model name (onevision), None = the served default
    version: str | None = None  # registry version (e.g. v0004), None = CURRENT


class Experiment(BaseModel):
    key: str
    seed: str | None = None  # the salt; defaults to the key, as in GrowthBook
    hash_version: int = 2
    coverage: float = Field(1.0, ge=0.0, le=1.0)
    weights: list[float] | None = None
    variants: list[str]  # names from the config's `variants`; the first is the control
    namespace: tuple[float, float] = (0.0, 1.0)  # this experiment's slice of its layer
    # GrowthBook's hashAttribute: the unit that is randomized. user_id keeps a shopper on one
    # variant; request_id splits every shopper's requests, which removes the between-shopper
    # variance from a model comparison (the closed-loop benchmark) at the cost of consistency
    hash_attribute: Literal["user_id", "request_id"] = "user_id"

    @model_validator(mode="after")
    def _check(self) -> "Experiment":
        if len(self.variants) < 1:
            raise ValueError(f"experiment {self.key!r} has no variants")
        if self.weights is not None and len(self.weights) != len(self.variants):
            raise ValueError(f"experiment {self.key!r}: {len(self.weights)} weights for {len(self.variants)} variants")
        if not 0.0 <= self.namespace[0] <= self.namespace[1] <= 1.0:
            raise ValueError(f"experiment {self.key!r}: namespace slice {self.namespace} is not inside [0, 1]")
        return self


class Layer(BaseModel):
    name: str  # the GrowthBook namespace id
    experiments: list[Experiment] = []

    @model_validator(mode="after")
    def _disjoint(self) -> "Layer":
        slices = sorted(e.namespace for e in self.experiments)
        for (_, end), (start, _) in zip(slices, slices[1:]):
            if start < end:
                raise ValueError(f"layer {self.name!r}: experiments' namespace slices overlap")
        return self


class Holdout(BaseModel):
    seed: str = "holdout"
    share: float = Field(0.0, ge=0.0, le=1.0)


class ExperimentConfig(BaseModel):
    default_variant: str
    variants: list[Variant]
    layers: list[Layer] = []
    holdout: Holdout = Holdout()
    forced: dict[str, str] = {}  # user_id -> variant name (QA)

    @model_validator(mode="after")
    def _known(self) -> "ExperimentConfig":
        names = {v.name for v in self.variants}
        used = {self.default_variant, *self.forced.values(),
                *(v for layer in self.layers for e in layer.experiments for v in e.variants)}
        if unknown := sorted(used - names):
            raise ValueError(f"unknown variants {unknown}; declared: {sorted(names)}")
        return self

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    @classmethod
    def load(cls, path: Path) -> "ExperimentConfig":
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))


class Assignment(BaseModel):
    variant: str
    experiment: str = ""  # empty when the user is in no experiment (default, holdout or forced)
    bucket: float | None = None  # the user's hash in the experiment
    reason: str = "default"  # experiment | forced | holdout | default


class Router:
    """Assigns each user the variant that serves them; deterministic, no state."""

    def __init__(self, config: ExperimentConfig):
        self.config = config

    def assign(self, user_id: str, request_id: str | None = None) -> Assignment:
        cfg = self.config
        if user_id in cfg.forced:
            return Assignment(variant=cfg.forced[user_id], reason="forced")
        if cfg.holdout.share > 0 and hash(cfg.holdout.seed, user_id, 2) < cfg.holdout.share:
            return Assignment(variant=cfg.default_variant, reason="holdout")
        for layer in cfg.layers:
            for exp in layer.experiments:
                unit = request_id if exp.hash_attribute == "request_id" and request_id else user_id
                if not in_namespace(unit, (layer.name, *exp.namespace)):
                    continue
                n = hash(exp.seed or exp.key, unit, exp.hash_version)
                if n is None:
                    continue
                i = choose_variation(n, get_bucket_ranges(len(exp.variants), exp.coverage, exp.weights))
                if i >= 0:
                    return Assignment(variant=exp.variants[i], experiment=exp.key, bucket=n, reason="experiment")
        return Assignment(variant=cfg.default_variant)
