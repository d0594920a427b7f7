"""The thin Feast client that streaming and serving share: one FeatureStore built from
OneVision's settings and the declarative repo in `features/repo/`.

Redis is the online store. Only on a laptop (the embedded Redis of the default settings) does a
Redis that does not answer fall back to the SQLite config in the same repo, with a warning, so
the same features are still read and written; with an external Redis (`redis.embedded: false`)
one that does not answer is an error, never a silent switch to a local file nobody else reads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from feast import FeatureStore, RepoConfig

from infra.process import ServiceError, port_open
from infra.settings import Settings

REPO = Path(__file__).parent / "repo"
PROJECT = "onevision"
USER_VIEW, ITEM_VIEW = "user_behaviour", "item_stats"
USER_FEATURES = ("short_sids", "long_sid", "recent_sids")
ITEM_FEATURES = ("sid", "clicks_30d", "orders_30d", "gmv_30d", "s_conv")
Backend = Literal["redis", "sqlite", "auto"]
log = logging.getLogger(__name__)


def feast_dir(settings: Settings) -> Path:
    return settings.resolved_state_dir() / "feast"


def redis_connection_string(settings: Settings) -> str:
    """Feast's `host:port,db=N[,username=..,password=..,ssl=true]` form of OneVision's Redis settings.

    Feast JSON-decodes each value, so credentials are written as JSON strings (a password such as
    `1234` or `true` stays a string); it splits on commas first, so a credential with a comma
    cannot be expressed and is refused here rather than sent half."""
    r = settings.redis
    creds = {"username": r.username, "password": r.password.get_secret_value() if r.password else None}
    extra = ""
    for name, value in creds.items():
        if value is None:
            continue
        if "," in value:
            raise ValueError(f"Feast cannot use a Redis {name} containing a comma ({r.safe_url})")
        extra += f",{name}={json.dumps(value)}"
    return f"{r.host}:{r.port},db={r.db}{extra}" + (",ssl=true" if r.ssl else "")


def repo_config(settings: Settings, backend: Backend = "auto") -> RepoConfig:
    """The repo's YAML with its variables filled from `settings`, as `feast apply` would read it.

    `auto` is Redis when it answers; when it does not, SQLite for the embedded (laptop) Redis and
    a `ServiceError` naming the external one otherwise."""
    if backend == "auto":
        r = settings.redis
        backend = "redis" if port_open(r.host, r.port) else "sqlite"
        if backend == "sqlite" and not r.embedded:
            raise ServiceError(f"the external Redis at {r.safe_url} does not answer; the feature store needs it "
                               f"(redis.embedded is false, so there is no local SQLite fallback)")
        if backend == "sqlite":
            log.warning("the embedded Redis at %s does not answer; using Feast's SQLite online store", r.safe_url)
    name = "feature_store.yaml" if backend == "redis" else "feature_store.sqlite.yaml"
    text = (REPO / name).read_text()
    fdir = feast_dir(settings)
    fdir.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(text.replace("${ONEVISION_FEAST_DIR}", str(fdir)))
    if raw["online_store"].get("connection_string") == "${ONEVISION_FEAST_REDIS}":
        # set after parsing: a password is not YAML and must not be read as YAML
        raw["online_store"]["connection_string"] = redis_connection_string(settings)
    config = RepoConfig(**raw)
    config.repo_path = REPO
    return config


def definitions():
    """The objects `definitions.py` declares (imported by path: the repo is a Feast repo, not a package)."""
    spec = importlib.util.spec_from_file_location("onevision_feature_definitions", REPO / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def feature_store(settings: Settings, backend: Backend = "auto", apply: bool = True) -> FeatureStore:
    """A FeatureStore on OneVision's online store, with the repo's definitions applied."""
    store = FeatureStore(config=repo_config(settings, backend))
    if apply:
        d = definitions()
        store.apply([d.user, d.item, d.user_behaviour_push, d.item_stats_push, d.user_behaviour, d.item_stats])
    return store


def user_features(store: FeatureStore, user_ids: list[str]) -> list[dict]:
    """Each user's short-term SIDs (newest first), long-term SID and the SIDs of the recent clicks
    and orders it aggregates (oldest first), as code lists; empty for a user the workers have not
    seen (cold start)."""
    rows = store.get_online_features(features=[f"{USER_VIEW}:{f}" for f in USER_FEATURES],
                                     entity_rows=[{"user_id": u} for u in user_ids]).to_dict()
    out = []
    for i, u in enumerate(user_ids):
        out.append({"user_id": u, "short_sids": _codes(rows["short_sids"][i]),
                    "long_sid": list(rows["long_sid"][i] or []), "recent_sids": _codes(rows["recent_sids"][i])})
    return out


def _codes(sids: list[str] | None) -> list[list[int]]:
    """Feast's 'c1-c2-...' SID strings -> code lists."""
    return [[int(c) for c in s.split("-")] for s in sids or []]


def item_features(store: FeatureStore, item_ids: list[str], features: Sequence[str] = ITEM_FEATURES) -> list[dict]:
    """Each item's `features` from the online store (None where the workers have not seen it)."""
    rows = store.get_online_features(features=[f"{ITEM_VIEW}:{f}" for f in features],
                                     entity_rows=[{"item_id": i} for i in item_ids]).to_dict()
    return [{k: rows[k][i] for k in ("item_id", *features)} for i in range(len(item_ids))]


def read_s_conv(store: FeatureStore, item_ids: list[str], chunk: int = 2000) -> dict[str, float]:
    """item id -> S_conv for the items the online store has (the item-stats worker's live 30-day
    figures); items it has not seen are left out."""
    rows = (r for start in range(0, len(item_ids), chunk)
            for r in item_features(store, item_ids[start:start + chunk], ("s_conv",)))
    return {r["item_id"]: float(r["s_conv"]) for r in rows if r["s_conv"] is not None}
