"""The Ray Serve application: `serve run serving/config.yaml`, or `build({...})` from Python.

Two deployments:
- `SearchModel` hosts the generator(s) the experiment variants name, with `@serve.batch`
  dynamic batching: concurrent requests are searched as one batch per (variant, scene);
- `Ingress` (FastAPI) answers HTTP: validates the request (`serving.inputs`), routes the user
  to a variant (`serving.experiments`), reads the user's features from Feast online, calls the
  model, and produces one exposure event per shown item to Kafka with the assignment.
Endpoints: `POST /v1/search`, `GET /healthz`, `GET /metrics` (Prometheus text).
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` type on the
# handlers of the Serve ingress class.
import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.experiments import ExperimentConfig, Router
from serving.inputs import MAX_UPLOAD_BYTES, BadRequest, read_search
from serving.schemas import Hit, SearchResponse

DEFAULT_EXPERIMENTS = Path(__file__).with_name("experiments.yaml")
MAX_BATCH_SIZE, BATCH_WAIT_S = 16, 0.005


def default_model(catalog: Path) -> str:
    return f"generator-vrq-{Path(catalog).name}"


@serve.deployment(ray_actor_options={"num_cpus": 1})
class SearchModel:
    """Every OneVision model version the variants name, searched in dynamic batches."""

    def __init__(self, catalog: str, registry: str, experiments: str, beam: int = 256,
                 max_batch_size: int = MAX_BATCH_SIZE, batch_wait_s: float = BATCH_WAIT_S):
        from onevision.catalog.format import load_catalog
        from onevision.generator.image_search import ImageSearch
        from onevision.registry import resolve

        config = ExperimentConfig.load(Path(experiments))
        cat = load_catalog(Path(catalog))
        self.beam, self.versions, self.searches = beam, {}, {}
        for v in config.variants:
            if v.method != "onevision":
                raise ValueError(f"variant {v.name!r}: method {v.method!r} is not served yet (onevision only)")
            model = v.model or default_model(Path(catalog))
            version = resolve(Path(registry) / model / v.version if v.version else Path(registry) / model)
            self.versions[v.name] = f"{model}/{version.name}"
            if self.versions[v.name] not in self.searches:
                self.searches[self.versions[v.name]] = ImageSearch.from_registry(version, cat)
        self.search.set_max_batch_size(max_batch_size)
        self.search.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def search(self, queries: list[dict]) -> list[dict | None]:
        """Each query: variant, image (PIL), user features, scene, top_k."""
        out: list[dict | None] = [None] * len(queries)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault((q["variant"], q["scene"]), []).append(i)
        for (variant, scene), rows in groups.items():
            version = self.versions[variant]
            k = max(queries[i]["top_k"] for i in rows)
            answers = self.searches[version].search([queries[i]["image"] for i in rows],
                                                    [queries[i]["user"] for i in rows], scene=scene, beam=self.beam, k=k)
            for i, ans in zip(rows, answers):
                hits = [{"item_id": h.item_id, "score": h.score, "sid": h.sid} for h in ans.hits[: queries[i]["top_k"]]]
                out[i] = {"hits": hits, "low_confidence": ans.low_confidence, "similarity": ans.similarity,
                          "model_version": version}
        return out

    def check_health(self) -> None:
        if not self.searches:
            raise RuntimeError("no model loaded")


api = FastAPI(title="OneVision image search")


@serve.deployment(ray_actor_options={"num_cpus": 0.5})
@serve.ingress(api)
class Ingress:
    def __init__(self, model: DeploymentHandle, catalog: str, settings: dict, experiments: str,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES):
        from features.client import feature_store
        from infra.settings import Settings
        from streaming.producer import EventProducer

        self.model, self.max_upload_bytes = model, max_upload_bytes
        self.settings = Settings.model_validate(settings)
        self.router = Router(ExperimentConfig.load(Path(experiments)))
        self.store = feature_store(self.settings)
        self.producer = EventProducer(self.settings)
        items = pd.read_parquet(Path(catalog) / "items.parquet", columns=["item_id", "price"])
        self.price = dict(zip(items["item_id"], items["price"].astype(float)))
        self.metrics = CollectorRegistry()
        self.requests = Counter("onevision_requests", "search requests by variant and HTTP status",
                                ["variant", "status"], registry=self.metrics)
        self.latency = Histogram("onevision_request_seconds", "search latency by stage", ["stage"],
                                 registry=self.metrics, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))

    def _user(self, user_id: str) -> dict:
        from features.client import user_features

        return user_features(self.store, [user_id])[0]

    def _expose(self, user_id: str, request_id: str, scene: str, variant: str, experiment: str, hits: list[dict]) -> None:
        from streaming.producer import event

        for pos, h in enumerate(hits):
            self.producer.send(event("exposure", user_id, h["item_id"], scene=scene, request_id=request_id,
                                     position=pos, price=self.price.get(h["item_id"]), variant=variant,
                                     experiment=experiment or None))

    @api.post("/v1/search", response_model=SearchResponse)
    async def search(self, request: Request) -> Any:
        t0 = time.perf_counter()
        try:
            params, image = await read_search(request, self.max_upload_bytes)
        except BadRequest as exc:
            self.requests.labels("", str(exc.status)).inc()
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        t1 = time.perf_counter()
        assignment = self.router.assign(params.user_id)
        user = await asyncio.to_thread(self._user, params.user_id)
        t2 = time.perf_counter()
        answer = await self.model.search.remote({"variant": assignment.variant, "image": image, "user": user,
                                                 "scene": params.scene, "top_k": params.top_k})
        t3 = time.perf_counter()
        request_id = uuid.uuid4().hex
        await asyncio.to_thread(self._expose, params.user_id, request_id, params.scene, assignment.variant,
                                assignment.experiment, answer["hits"])
        t4 = time.perf_counter()
        for stage, dt in (("parse", t1 - t0), ("features", t2 - t1), ("model", t3 - t2), ("log", t4 - t3), ("total", t4 - t0)):
            self.latency.labels(stage).observe(dt)
        self.requests.labels(assignment.variant, "200").inc()
        return SearchResponse(
            request_id=request_id, variant=assignment.variant, experiment=assignment.experiment,
            model_version=answer["model_version"], low_confidence=answer["low_confidence"],
            similarity=answer["similarity"], short_sids=user["short_sids"],
            items=[Hit(position=i, **h) for i, h in enumerate(answer["hits"])])

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/metrics")
    async def metrics(self) -> PlainTextResponse:
        return PlainTextResponse(generate_latest(self.metrics).decode(), media_type=CONTENT_TYPE_LATEST)


def build(args: dict) -> serve.Application:
    """The application from `serve run`'s args: catalog, registry, experiments (YAML path),
    settings (a dict of `infra.settings.Settings`; the environment's when absent), beam."""
    from infra.settings import load_settings

    catalog, registry = str(args["catalog"]), str(args.get("registry", "data/registry"))
    experiments = str(args.get("experiments", DEFAULT_EXPERIMENTS))
    settings = args.get("settings") or load_settings().model_dump(mode="json")
    model = SearchModel.bind(catalog, registry, experiments, beam=int(args.get("beam", 256)),
                             max_batch_size=int(args.get("max_batch_size", MAX_BATCH_SIZE)))
    return Ingress.bind(model, catalog, settings, experiments)
