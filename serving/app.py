"""The Ray Serve application: `serve run serving/config.yaml`, or `build({...})` from Python.

Two deployments, so that HTTP work and the model run in separate processes (one Python GIL
each; in one process on two cores, request parsing starved the model's batches down to 1.3
requests on average):
- `SearchModel` hosts the generator versions the experiment variants name
  (`serving.models.ServedModels`), searched with `@serve.batch` dynamic batching on its event
  loop, and follows the registry for hot swaps (a background thread);
- `Ingress` (FastAPI) validates the request (`serving.inputs`), routes the user to a variant
  (`serving.experiments`), reads the user's features from Feast online, calls the model,
  answers, and then logs the request's context (the photo's visual tokens and the features the
  model read; `streaming.request_log`, for the DPO job) and produces one exposure event per
  shown item to Kafka with the assignment.
Endpoints: `POST /v1/search`, `GET /healthz`, `GET /metrics` (Prometheus text); the web page
`GET /` (`web/index.html`) with `GET /v1/samples`, `/v1/photos/{id}`, `/v1/items/{id}/image`,
`/v1/users/{id}` and `POST /v1/events` (a click or order from the page).
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` type on the
# handlers of the Serve ingress class.
import asyncio
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.experiments import ExperimentConfig, Router
from serving.inputs import MAX_UPLOAD_BYTES, BadRequest, read_search, validation_reason
from serving.models import ServedModels
from serving.schemas import Hit, SearchResponse

DEFAULT_EXPERIMENTS = Path(__file__).with_name("experiments.yaml")
PAGE = Path(__file__).parent / "web" / "index.html"
SAMPLE_PHOTOS = 16
FEEDBACK_FIELDS = ("type", "user_id", "item_id", "request_id", "position", "variant", "experiment", "scene", "price")
WATCH_S = 2.0  # how often a replica looks for new registry versions of the models it follows
ITEM_STATS_S = 30.0  # how often it reads the items' live S_conv from the online store (5,000 items: ~0.3 s)
log = logging.getLogger("ray.serve")
# Under load the next batch is whatever queued while the last one ran, so the wait only matters
# when idle. Serve's default of 5 requests in flight per replica would cap every batch at 5 and
# queue the rest in the proxy: a replica must hold enough requests to fill its batches.
MAX_BATCH_SIZE, BATCH_WAIT_S = 16, 0.002


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class SearchModel:
    def __init__(self, catalog: str, registry: str, experiments: str, beam: int = 256,
                 max_batch_size: int = MAX_BATCH_SIZE, batch_wait_s: float = BATCH_WAIT_S,
                 torch_threads: int | None = None, watch_s: float = WATCH_S, settings: dict | None = None,
                 item_stats_s: float = ITEM_STATS_S):
        import torch

        from onevision.catalog.format import load_catalog

        if torch_threads:  # Ray sets one thread per reserved CPU; the model may use more
            torch.set_num_threads(torch_threads)
        self.models = ServedModels(load_catalog(Path(catalog)), Path(registry),
                                   ExperimentConfig.load(Path(experiments)), beam=beam)
        self.search.set_max_batch_size(max_batch_size)
        self.search.set_batch_wait_timeout_s(batch_wait_s)
        self.stopped = threading.Event()
        if watch_s > 0 and self.models.follow:
            threading.Thread(target=self._watch, args=(watch_s,), daemon=True, name="registry-watch").start()
        self.item_stats = {"reads": 0, "errors": 0, "items": 0}
        if settings is not None and item_stats_s > 0:
            threading.Thread(target=self._follow_item_stats, args=(settings, item_stats_s), daemon=True,
                             name="item-stats").start()

    def _watch(self, every_s: float) -> None:
        """Hot swap: new registry versions load here, off the request path (`ServedModels.refresh`)."""
        while not self.stopped.wait(every_s):
            for variant in self.models.refresh():
                log.info("variant %s now serves %s", variant, self.models.versions[variant])

    def _follow_item_stats(self, settings: dict, every_s: float) -> None:
        """Live S_conv: the items' values from the online store now and every `every_s`, off the
        request path; an unreadable store is counted and the last values keep serving."""
        from features.client import feature_store, read_s_conv
        from infra.settings import Settings

        item_ids = list(self.models.catalog.items["item_id"])
        store = None
        while True:
            try:
                store = store or feature_store(Settings.model_validate(settings))
                live = read_s_conv(store, item_ids)
                self.models.use_s_conv(live)
                self.item_stats.update(reads=self.item_stats["reads"] + 1, items=len(live))
            except Exception as exc:  # noqa: BLE001 - Redis down or restarting: keep the last values
                self.item_stats["errors"] += 1
                log.warning("live S_conv not read (%s); the last values keep serving", exc)
            if self.stopped.wait(every_s):
                return

    def __del__(self) -> None:
        self.stopped.set()

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def search(self, queries: list[dict]) -> list[dict]:
        return self.models.search(queries)

    def health(self) -> dict:
        return {"variants": self.models.versions, "swaps": self.models.swaps, "failed_loads": self.models.failed_loads,
                "live_s_conv": self.item_stats}


api = FastAPI(title="OneVision image search")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
@serve.ingress(api)
class Ingress:
    def __init__(self, model: DeploymentHandle, catalog: str, settings: dict, experiments: str,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES):
        from features.client import feature_store
        from infra.settings import Settings
        from streaming.producer import EventProducer
        from streaming.request_log import RequestLog

        self.model, self.max_upload_bytes = model, max_upload_bytes
        self.settings = Settings.model_validate(settings)
        self.router = Router(ExperimentConfig.load(Path(experiments)))
        self.store = feature_store(self.settings)
        self.producer = EventProducer(self.settings)
        self.request_log = RequestLog.from_url(self.settings.redis.url)
        self.page_html = PAGE.read_text()
        self.log_thread = ThreadPoolExecutor(1, thread_name_prefix="exposures")
        self.root = Path(catalog)
        items = pd.read_parquet(self.root / "items.parquet", columns=["item_id", "image", "price"])
        self.price = dict(zip(items["item_id"], items["price"].astype(float)))
        self.item_image = dict(zip(items["item_id"], items["image"]))
        q = pd.read_parquet(self.root / "queries.parquet", columns=["query_id", "image", "user_id", "split"])
        self.samples = q[q["split"] == "test"].head(SAMPLE_PHOTOS)  # the page's gallery: photos never trained on
        self.metrics = CollectorRegistry()
        self.requests = Counter("onevision_requests", "search requests by variant and HTTP status",
                                ["variant", "status"], registry=self.metrics)
        self.exposure_errors = Counter("onevision_exposure_errors", "answers whose exposures could not be produced",
                                       registry=self.metrics)
        self.context_errors = Counter("onevision_request_context_errors",
                                      "answers whose request context (for the DPO job) could not be stored",
                                      registry=self.metrics)
        self.batch_size = Histogram("onevision_model_batch_size", "requests per model batch, seen by each request",
                                    registry=self.metrics, buckets=(1, 2, 4, 8, 12, 16, 32))
        self.latency = Histogram("onevision_request_seconds", "search latency by stage", ["stage"],
                                 registry=self.metrics, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))

    def _user(self, user_id: str) -> dict:
        from features.client import user_features

        return user_features(self.store, [user_id])[0]

    def _expose(self, user_id: str, request_id: str, scene: str, variant: str, experiment: str, hits: list[dict],
                user: dict, answer: dict) -> None:
        """The request's context (what the DPO job trains on), then one exposure per shown item. A
        context that cannot be stored (Redis down) costs the DPO job one example, never the exposures."""
        from streaming.producer import event, now_ms
        from streaming.request_log import RequestContext

        visual = answer.get("visual")
        if visual is not None:
            try:
                self.request_log.put([RequestContext(request_id, user_id, scene, now_ms(), variant,
                                                     answer["model_version"], user, visual.tokens, visual.embedding)])
            except Exception as exc:  # noqa: BLE001 - any storage failure; counted and logged, serving goes on
                self.context_errors.inc()
                log.error("request context %s not logged: %s", request_id, exc)
        for pos, h in enumerate(hits):
            self.producer.send(event("exposure", user_id, h["item_id"], scene=scene, request_id=request_id,
                                     position=pos, price=self.price.get(h["item_id"]), variant=variant,
                                     experiment=experiment or None))

    def _logged(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.exposure_errors.inc()
            log.error("exposures not logged: %s", task.exception())

    @api.post("/v1/search", response_model=SearchResponse)
    async def search(self, request: Request) -> Any:
        t0 = time.perf_counter()
        try:
            params, image = await read_search(request, self.max_upload_bytes)
        except BadRequest as exc:
            self.requests.labels("", str(exc.status)).inc()
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        t1 = time.perf_counter()
        request_id = uuid.uuid4().hex
        assignment = self.router.assign(params.user_id, request_id)
        user = await asyncio.to_thread(self._user, params.user_id)
        t2 = time.perf_counter()
        answer = await self.model.search.remote({"variant": assignment.variant, "image": image, "user": user,
                                                 "scene": params.scene, "top_k": params.top_k})
        t3 = time.perf_counter()
        # exposures go out after the answer, off the request path (the producer batches and retries)
        task = asyncio.get_running_loop().run_in_executor(
            self.log_thread, self._expose, params.user_id, request_id, params.scene, assignment.variant,
            assignment.experiment, answer["hits"], user, answer)
        task.add_done_callback(self._logged)
        self.batch_size.observe(answer["batch_size"])
        for stage, dt in (("parse", t1 - t0), ("features", t2 - t1), ("model", t3 - t2),
                          ("model_compute", answer["compute_s"]), ("total", t3 - t0)):
            self.latency.labels(stage).observe(dt)
        self.requests.labels(assignment.variant, "200").inc()
        return SearchResponse(
            request_id=request_id, variant=assignment.variant, experiment=assignment.experiment,
            model_version=answer["model_version"], low_confidence=answer["low_confidence"],
            similarity=answer["similarity"], short_sids=user["short_sids"],
            items=[Hit(position=i, **h) for i, h in enumerate(answer["hits"])])

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> str:
        return self.page_html

    @api.get("/v1/samples")
    async def samples_list(self) -> dict:
        photos = [{"id": r.query_id, "url": f"/v1/photos/{r.query_id}", "user_id": r.user_id}
                  for r in self.samples.itertuples()]
        return {"photos": photos, "users": sorted(set(self.samples["user_id"])) + ["a-new-shopper"]}

    @api.get("/v1/photos/{query_id}")
    async def sample_photo(self, query_id: str) -> Response:
        rows = self.samples[self.samples["query_id"] == query_id]
        if rows.empty:
            return JSONResponse({"error": f"no sample photo {query_id!r}"}, status_code=404)
        return FileResponse(self.root / rows["image"].iloc[0])

    @api.get("/v1/items/{item_id}/image")
    async def item_image_file(self, item_id: str) -> Response:
        if item_id not in self.item_image:
            return JSONResponse({"error": f"unknown item {item_id!r}"}, status_code=404)
        return FileResponse(self.root / self.item_image[item_id])

    @api.get("/v1/users/{user_id}")
    async def user(self, user_id: str) -> dict:
        return await asyncio.to_thread(self._user, user_id)

    @api.post("/v1/events")
    async def feedback(self, request: Request) -> Response:
        """A click or order from the page (or any client), validated and produced to Kafka."""
        from streaming.producer import event

        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError(f"the body must be a JSON object, not {type(body).__name__}")
            e = event(**{k: body.get(k) for k in FEEDBACK_FIELDS if body.get(k) not in (None, "")})
            if e.type == "exposure":
                raise ValueError("exposures are logged by the service itself")
        except ValidationError as exc:
            return JSONResponse({"error": validation_reason(exc)}, status_code=422)
        except (ValueError, TypeError) as exc:  # bad JSON, a missing field
            return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=422)
        await asyncio.to_thread(self.producer.send, e)
        return JSONResponse({"event_id": e.event_id}, status_code=202)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", **(await self.model.health.remote())}

    @api.get("/metrics")
    async def metrics(self) -> PlainTextResponse:
        return PlainTextResponse(generate_latest(self.metrics).decode(), media_type=CONTENT_TYPE_LATEST)


def build(args: dict) -> serve.Application:
    """The application from `serve run`'s args: catalog, registry, experiments (YAML path),
    settings (a dict of `infra.settings.Settings`; the environment's when absent), beam,
    max_batch_size, torch_threads, watch_s (0 = no hot swap), item_stats_s (0 = the catalog's S_conv only)."""
    from infra.settings import load_settings

    settings = args.get("settings") or load_settings().model_dump(mode="json")
    catalog, experiments = str(args["catalog"]), str(args.get("experiments", DEFAULT_EXPERIMENTS))
    threads = args.get("torch_threads")
    model = SearchModel.bind(catalog, str(args.get("registry", "data/registry")), experiments,
                             beam=int(args.get("beam", 256)),
                             max_batch_size=int(args.get("max_batch_size", MAX_BATCH_SIZE)),
                             torch_threads=int(threads) if threads else None,
                             watch_s=float(args.get("watch_s", WATCH_S)),
                             settings=settings, item_stats_s=float(args.get("item_stats_s", ITEM_STATS_S)))
    return Ingress.bind(model, catalog, settings, experiments)
