"""Configuration and presets of the synthetic product world.

One pydantic model holds every knob; presets only change sizes. Everything the world
generates is a pure function of this config (seed included), so two builds with the same
config are byte-identical.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorldConfig(BaseModel):
    """Sizes and difficulty of a synthetic e-commerce world."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "small"
    seed: int = 0
    # catalog
    n_categories: int = Field(20, ge=1, le=40)
    n_items: int = Field(5000, ge=4)
    max_family_size: int = Field(5, ge=1, description="near-duplicate family sizes are 1..max")
    n_views: int = Field(3, ge=0, description="non-catalog views per item")
    image_size: int = Field(128, ge=32, le=512)
    # users and behaviour
    n_users: int = Field(2000, ge=1)
    sessions_per_user: int = Field(20, ge=1, description="history sessions per user (mean)")
    exposures_per_session: int = Field(10, ge=2)
    history_days: int = Field(60, ge=30)
    # queries (shopper photos)
    n_queries: int = Field(6000, ge=3)
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    order_share: float = Field(0.5, ge=0.0, le=1.0, description="share of queries that end in an order")
    other_variant_share: float = Field(
        0.25, ge=0.0, le=1.0, description="share of queries whose photo shows a family sibling of the bought item"
    )
    # rendering
    workers: int = Field(0, ge=0, description="render processes; 0 = one per CPU")
    # fixed world clock (ms since epoch) so that builds never depend on the wall clock
    epoch_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z

    def identity(self) -> dict:
        """The fields that decide the world's content (not how it is computed)."""
        return self.model_dump(mode="json", exclude={"workers"})


PRESETS: dict[str, WorldConfig] = {
    "tiny": WorldConfig(
        name="tiny", n_categories=6, n_items=120, max_family_size=4, n_views=2, image_size=64,
        n_users=60, sessions_per_user=10, n_queries=150,
    ),
    "small": WorldConfig(name="small"),
    "large": WorldConfig(
        name="large", n_categories=40, n_items=100_000, n_views=3, image_size=128,
        n_users=40_000, sessions_per_user=20, n_queries=50_000,
    ),
}


def preset(name: str, **overrides) -> WorldConfig:
    """Return a preset by name, with optional field overrides (e.g. seed)."""
    if name not in PRESETS:
        raise ValueError(f"unknown world preset {name!r}; choose one of {sorted(PRESETS)}")
    return WorldConfig(**{**PRESETS[name].model_dump(), **overrides})
