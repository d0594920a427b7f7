"""The Ray Serve application: `serve run serving/config.yaml`, or `build({...})` from Python.

Two deployments, so that HTTP work and the model run in separate processes (one Python GIL
each; in one process on two cores, request parsing starved the model's batches down to 1.3
requests on average):
- `SearchModel` hosts the generator versions the experiment variants name
  (`serving.models.ServedModels`), searched with `@serve.batch` dynamic batching on its event
  loop, and follows the registry for hot swaps (a background thread);
- `Ingress` (FastAPI) validates the request (`serving.inputs`), routes the user to a variant
  (`serving.experiments`), reads the user's features from Feast online, calls the model,
  answers, and then produces the request's context (the photo's visual tokens and the features
  the model read; `streaming.request_log`, for the DPO job) and one exposure event per shown item
  to Kafka with the assignment.
Endpoints: `POST /v1/search`, `GET /healthz`, `GET /metrics` (Prometheus text); the web page
`GET /` (`web/index.html`) with `GET /v1/samples`, `/v1/photos/{id}`, `/v1/items/{id}/image`,
`/v1/users/{id}` (API key) and `POST /v1/events` (a click with its answer's feedback token, or
an order with the API key; `serving.access`, `serving.feedback`).

Closed doors, degraded modes: per-client rate limits on the public endpoints
(`serving.rate_limit`); the online store down -> cold-start features and `degraded` in the
answer (`serving.user_reads`); the broker down -> exposures dropped and counted
(`serving.exposures`), `/v1/events` 503 with Retry-After; every response counted by route and
status in `onevision_http_responses`, an unexpected error as a counted 500.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` type on the
# handlers of the Serve ingress class.
import asyncio
import base64
import binascii
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from kafka.errors import MessageSizeTooLargeError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.access import API_KEY_HEADER, Denied, check_api_key, has_api_key
from serving.cluster_metrics import MetricsHub, Reporter
from serving.experiments import DEFAULT_EXPERIMENTS, ExperimentConfig, Router
from serving.exposures import Answered
from serving.inputs import MAX_UPLOAD_BYTES, BadRequest, read_body, read_search, validation_reason
from serving.models import ServedModels
from serving.schemas import SEARCH_FORM, CatalogChangeBody, FeedbackBody, Hit, JSONSearch, SearchResponse, openapi_body

PAGE = Path(__file__).parent / "web" / "index.html"
SAMPLE_PHOTOS = 16
EVENT_ACK_S = 5.0  # how long /v1/events waits for the broker before answering 503
RETRY_AFTER_S = 5
MAX_EVENT_BYTES = 64 * 1024
SEEN_KEY = "ov:events-seen:{}"  # event ids /v1/events has produced, for the feedback tokens' lifetime
WATCH_S = 2.0  # how often a replica looks for new registry versions of the models it follows
ITEM_STATS_S = 30.0  # how often it reads the items' live S_conv from the online store (5,000 items: ~0.3 s)
CATALOG_CATCH_UP_S = 30.0  # how long a starting replica reads catalog changes before it serves
MAX_CATALOG_BYTES = 4 * 1024 * 1024  # one POST /v1/catalog body (a base64 photo inside)
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
                 item_stats_s: float = ITEM_STATS_S, device: str = "cpu", hub: DeploymentHandle | None = None,
                 follow_catalog: bool = True):
        import torch

        from onevision.catalog.format import load_catalog
        from onevision.device import resolve_device
        from onevision.storage import localize

        if torch_threads:  # Ray sets one thread per reserved CPU; the model may use more
            torch.set_num_threads(torch_threads)
        # `auto` takes the replica's GPU when Ray gave it one (ray_actor_options num_gpus); catalog
        # and registry may be URLs (s3://...): this node copies what it needs and checks it
        self.models = ServedModels(load_catalog(localize(catalog, "catalogs")), registry,
                                   ExperimentConfig.load(Path(experiments)), beam=beam,
                                   device=str(resolve_device(device)))
        self.search.set_max_batch_size(max_batch_size)
        self.search.set_batch_wait_timeout_s(batch_wait_s)
        self.metrics = ReplicaMetrics()
        self.metrics.serving(self.models.versions)
        self.reporter = Reporter(hub, self.metrics.registry) if hub is not None else None
        self.stopped = threading.Event()
        if watch_s > 0 and self.models.follow:
            threading.Thread(target=self._watch, args=(watch_s,), daemon=True, name="registry-watch").start()
        self.catalog_follow = {"position": 0, "errors": 0, "malformed": 0, "last_change_ts": 0, "applied_at": 0}
        if settings is not None and follow_catalog:
            follower = self._catch_up_catalog(settings)  # before serving: a removed item is never served again
            threading.Thread(target=self._follow_catalog, args=(settings, follower), daemon=True,
                             name="catalog-follow").start()
        self.item_stats = {"reads": 0, "errors": 0, "items": 0}
        if settings is not None and item_stats_s > 0:
            threading.Thread(target=self._follow_item_stats, args=(settings, item_stats_s), daemon=True,
                             name="item-stats").start()

    def _watch(self, every_s: float) -> None:
        """Hot swap: new registry versions load here, off the request path (`ServedModels.refresh`)."""
        while not self.stopped.wait(every_s):
            changed = self.models.refresh()
            for variant in changed:
                log.info("variant %s now serves %s", variant, self.models.versions[variant])
            if changed:
                self.metrics.serving(self.models.versions, swaps=len(changed))

    def _catch_up_catalog(self, settings: dict):
        """Read and apply every catalog change so far; None (the follow thread tries again) when
        the broker does not answer."""
        from infra.settings import Settings
        from streaming.catalog_stream import CatalogFollower

        follower = None
        try:
            follower = CatalogFollower(Settings.model_validate(settings), client_id=f"replica-{self.metrics.replica}",
                                       keep_photos=False)
            self._applied(follower, follower.catch_up(CATALOG_CATCH_UP_S))
            return follower
        except Exception as exc:  # noqa: BLE001 - the broker down: serve the model's catalog, keep trying
            self.catalog_follow["errors"] += 1
            log.warning("catalog changes not read at start (%s); serving the model's own catalog until they are", exc)
            if follower is not None:
                follower.close()
            return None

    def _applied(self, follower, changes: list, everything: bool = False) -> None:
        """Apply the items these changes touched (`everything`: every changed item, after a failure)."""
        from streaming.catalog_stream import changed_states

        if changes or everything:
            changed = follower.states if everything else changed_states(follower, changes)
            report = self.models.apply_catalog(follower.states, changed)
            log.info("catalog changes applied: %s", {k: len(v) for k, v in report.items()})
        self.catalog_follow.update(position=follower.position(), malformed=follower.counts["malformed"],
                                   last_change_ts=follower.last_change_ts, applied_at=int(time.time() * 1000))
        self.metrics.catalog.labels(self.metrics.replica, self.metrics.node).set(self.catalog_follow["position"])

    def _follow_catalog(self, settings: dict, follower) -> None:
        """Catalog changes as they come (`streaming.catalog_stream`), applied off the request path."""
        resync = False  # a batch failed: its changes are read, so apply every changed item's state again
        while not self.stopped.is_set():
            try:
                if follower is None:
                    follower = self._catch_up_catalog(settings)
                    if follower is None:
                        self.stopped.wait(2.0)
                        continue
                self._applied(follower, follower.poll(500), everything=resync)
                resync = False
            except Exception:  # noqa: BLE001 - a bad batch must not end the follow; the next round tries again
                self.catalog_follow["errors"] += 1
                resync = True
                log.exception("catalog changes not applied; applying every changed item again next round")
                self.stopped.wait(2.0)

    def encode_items(self, photos: list[bytes], items: list[dict]) -> list[dict]:
        """New items' SIDs and embeddings with the serving tokenizer (`ServedModels.encode_items`)."""
        return self.models.encode_items(photos, items)

    def _follow_item_stats(self, settings: dict, every_s: float) -> None:
        """Live S_conv: the items' values from the online store now and every `every_s`, off the
        request path; an unreadable store is counted and the last values keep serving."""
        from features.client import feature_store, read_s_conv
        from infra.settings import Settings

        store = None
        while True:
            try:
                store = store or feature_store(Settings.model_validate(settings))
                live = read_s_conv(store, self.models.item_ids())  # new items too, once catalog changes add them
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
        self.metrics.batch(len(queries))
        return self.models.search(queries)

    def health(self) -> dict:
        return {"variants": self.models.versions, "swaps": self.models.swaps, "failed_loads": self.models.failed_loads,
                "live_s_conv": self.item_stats, "replica": self.metrics.replica,
                "catalog": {**self.catalog_follow, **self.models.catalog_info()}}


class ReplicaMetrics:
    """A model replica's own series, labelled with the replica and its node (`serving.cluster_metrics`
    merges them with every other replica's): searches and batches it ran, swaps, what it serves."""

    def __init__(self) -> None:
        from serving.cluster_metrics import node_id, replica_name

        self.replica, self.node = replica_name(), node_id()
        self.registry = CollectorRegistry()
        labels = ["replica", "node"]
        self.searches = Counter("onevision_replica_searches", "searches a model replica ran", labels,
                                registry=self.registry)
        self.batches = Counter("onevision_replica_batches", "model batches a replica ran", labels,
                               registry=self.registry)
        self.swaps = Counter("onevision_replica_swaps", "hot swaps a replica made", labels, registry=self.registry)
        self.version = Gauge("onevision_replica_serving", "1 for each variant's version a replica serves",
                             [*labels, "variant", "version"], registry=self.registry)
        self.catalog = Gauge("onevision_replica_catalog_changes", "catalog change records a replica has read and "
                             "applied (the catalog topic's offset it serves)", labels, registry=self.registry)
        for c in (self.searches, self.batches, self.swaps, self.catalog):
            c.labels(self.replica, self.node)
        self.shown: set[tuple[str, ...]] = set()

    def batch(self, size: int) -> None:
        self.searches.labels(self.replica, self.node).inc(size)
        self.batches.labels(self.replica, self.node).inc()

    def serving(self, versions: dict[str, str], swaps: int = 0) -> None:
        """Set the new label sets, then remove the stale ones (a snapshot in between shows both, never none)."""
        current = {(self.replica, self.node, variant, version) for variant, version in versions.items()}
        for labels in current:
            self.version.labels(*labels).set(1)
        for labels in self.shown - current:
            self.version.remove(*labels)
        self.shown = current
        self.swaps.labels(self.replica, self.node).inc(swaps)


api = FastAPI(title="OneVision image search")


@api.middleware("http")
async def doors(request: Request, call_next) -> Response:
    """Rate limits first, then the handler; every answer counted by route and status, and an
    unexpected error answered (and counted) as a 500 with no internals in it."""
    ingress = request.app.state.ingress
    client = request.client.host if request.client else "unknown"
    request.state.trusted = has_api_key(ingress.api_key, request.headers.get(API_KEY_HEADER))  # handlers read it
    wait = None if request.state.trusted else ingress.rate_limits.retry_after(client, request.url.path)
    if wait is not None:
        response: Response = JSONResponse({"error": "too many requests: slow down"}, status_code=429,
                                          headers={"Retry-After": str(wait)})
    else:
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - the service stays up; the error is logged and counted
            log.exception("%s %s failed", request.method, request.url.path)
            response = JSONResponse({"error": "internal error"}, status_code=500)
    ingress.responses.labels(_route(request), str(response.status_code)).inc()
    return response


def _route(request: Request) -> str:
    """The route template a request matched (bounded label values: never the raw path)."""
    from starlette.routing import Match

    route = request.scope.get("route") or next(
        (r for r in request.app.router.routes if r.matches(request.scope)[0] == Match.FULL), None)
    return getattr(route, "path", "unmatched")


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=128)
@serve.ingress(api)
class Ingress:
    def __init__(self, model: DeploymentHandle, catalog: str, settings: dict, experiments: str,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, hub: DeploymentHandle | None = None):
        from features.client import feature_store
        from infra.settings import Settings, redis_client
        from onevision.storage import localize
        from serving.access import FeedbackSigner, api_key, feedback_secret
        from serving.exposures import ExposureLog
        from serving.rate_limit import RateLimits
        from serving.user_reads import UserReads
        from streaming.producer import EventProducer, kafka_producer
        from streaming.request_log import RequestLog

        self.model, self.max_upload_bytes = model, max_upload_bytes
        self.settings = Settings.model_validate(settings)
        a, state = self.settings.api, self.settings.resolved_state_dir()
        self.api_key = api_key(a.api_key, state)
        self.signer = FeedbackSigner(feedback_secret(a.feedback_secret, state), a.feedback_ttl_s)
        self.rate_limits = RateLimits(a.rate_limit, a.read_rate_limit)
        self.router = Router(ExperimentConfig.load(Path(experiments)))
        self.store = feature_store(self.settings)
        self.reads = UserReads(self._user)
        # a broker that does not answer costs a send at most max_block_ms, never a hung request
        self.producer = EventProducer(self.settings, kafka_producer(self.settings, max_block_ms=500))
        self.page_html = PAGE.read_text()
        self.root = localize(catalog, "catalogs")
        items = pd.read_parquet(self.root / "items.parquet")
        if "price" not in items.columns:  # the catalog format's default: unknown
            items["price"] = None
        self.price = {i: (float(p) if pd.notna(p) else None) for i, p in zip(items["item_id"], items["price"])}
        self.category = dict(zip(items["item_id"], items["category"].astype(str)))
        self.item_image = dict(zip(items["item_id"], items["image"]))
        self.photos: dict[str, bytes] = {}  # item id -> the photo a catalog change brought (served by the page)
        self.catalog_producer = None  # made on the first POST /v1/catalog
        self._producer_lock = threading.Lock()
        self.catalog_position = 0  # catalog change records this ingress has read
        follower = None
        try:  # before answering: a launched item's click must find its price
            from streaming.catalog_stream import CatalogFollower

            follower = CatalogFollower(self.settings, client_id="ingress-catalog")
            self._take_catalog(follower, follower.catch_up(CATALOG_CATCH_UP_S))
        except Exception as exc:  # noqa: BLE001 - the broker down: the follow thread keeps trying
            log.warning("ingress: catalog changes not read at start (%s)", exc)
            if follower is not None:
                follower.close()
            follower = None
        threading.Thread(target=self._follow_catalog, args=(follower,), daemon=True, name="catalog-follow").start()
        q = pd.read_parquet(self.root / "queries.parquet", columns=["query_id", "image", "user_id", "split"])
        self.samples = q[q["split"] == "test"].head(SAMPLE_PHOTOS)  # the page's gallery: photos never trained on
        self.metrics = CollectorRegistry()
        self.exposures = ExposureLog(self.producer, RequestLog.for_settings(self.producer.producer, self.settings),
                                     self.metrics)
        self.redis = redis_client(self.settings.redis, socket_timeout=1, socket_connect_timeout=1)
        self.requests = Counter("onevision_requests", "search requests by variant and HTTP status",
                                ["variant", "status"], registry=self.metrics)
        self.responses = Counter("onevision_http_responses", "HTTP responses by route and status",
                                 ["route", "status"], registry=self.metrics)
        self.degraded = Counter("onevision_degraded_requests", "searches answered in a degraded mode, by cause",
                                ["cause"], registry=self.metrics)
        self.stream_jobs = Gauge("onevision_stream_jobs", "stream workers and DPO jobs seen within the hour",
                                 ["role", "state"], registry=self.metrics)
        self.stream_stats = Gauge("onevision_stream_job_stat", "what each live stream job last reported (events, "
                                  "dlq, events_per_s, freshness_ms_p99; the DPO job's versions, examples, ...)",
                                  ["role", "worker", "stat"], registry=self.metrics)
        self.events_unavailable = Counter("onevision_events_unavailable",
                                          "events answered 503 because the broker did not take them",
                                          registry=self.metrics)
        self.batch_size = Histogram("onevision_model_batch_size", "requests per model batch, seen by each request",
                                    registry=self.metrics, buckets=(1, 2, 4, 8, 12, 16, 32))
        self.latency = Histogram("onevision_request_seconds", "search latency by stage", ["stage"],
                                 registry=self.metrics, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.hub = hub
        self.reporter = Reporter(hub, self.metrics) if hub is not None else None
        api.state.ingress = self  # what the `doors` middleware counts and limits with

    def _take_catalog(self, follower, changes: list) -> None:
        """Prices, categories and photos of changed items, for exposures, feedback and the page. A
        removed item keeps its price: a click or an order of it, shown before it went, still counts."""
        if changes:
            price, category, photos = dict(self.price), dict(self.category), dict(self.photos)
            for item in {c.item_id for c in changes}:
                st = follower.states[item]
                if st.price_set and (item in price or st.sid is not None):  # a known item, or one added
                    price[item] = st.price
                if st.category is not None and item in price:
                    category[item] = st.category
                if st.image is not None and item in price:
                    photos[item] = st.image
            self.price, self.category, self.photos = price, category, photos  # one assignment each
        self.catalog_position = follower.position()

    def _follow_catalog(self, follower) -> None:
        from streaming.catalog_stream import CatalogFollower

        while True:
            try:
                follower = follower or CatalogFollower(self.settings, client_id="ingress-catalog")
                self._take_catalog(follower, follower.poll(1000))
            except Exception as exc:  # noqa: BLE001 - the broker down: keep what is known, try again
                log.warning("ingress: catalog changes not read (%s)", exc)
                time.sleep(2.0)

    def _user(self, user_id: str) -> dict:
        from features.client import user_features

        return user_features(self.store, [user_id])[0]

    @api.post("/v1/search", response_model=SearchResponse,
              openapi_extra=openapi_body(**{"multipart/form-data": SEARCH_FORM, "application/json": JSONSearch}))
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
        user, degraded = await self.reads.get(params.user_id)
        if degraded:
            self.degraded.labels("features").inc()
        t2 = time.perf_counter()
        answer = await self.model.search.remote({"variant": assignment.variant, "image": image, "user": user,
                                                 "scene": params.scene, "top_k": params.top_k})
        t3 = time.perf_counter()
        items = [h["item_id"] for h in answer["hits"]]
        # exposures go out after the answer, off the request path (bounded; the producer batches and retries)
        self.exposures.submit(Answered(request_id, params.user_id, params.scene, assignment.variant,
                                       assignment.experiment, answer["model_version"], items,
                                       [self.price.get(i) for i in items], user, answer.get("visual")))
        self.batch_size.observe(answer["batch_size"])
        for stage, dt in (("parse", t1 - t0), ("features", t2 - t1), ("model", t3 - t2),
                          ("model_compute", answer["compute_s"]), ("total", t3 - t0)):
            self.latency.labels(stage).observe(dt)
        self.requests.labels(assignment.variant, "200").inc()
        return SearchResponse(
            request_id=request_id, variant=assignment.variant, experiment=assignment.experiment,
            model_version=answer["model_version"], low_confidence=answer["low_confidence"],
            similarity=answer["similarity"], degraded=degraded,
            short_sids=user["short_sids"] if request.state.trusted else None,
            feedback_token=self.signer.sign(request_id, params.user_id, params.scene, assignment.variant,
                                            assignment.experiment, items),
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
        if item_id in self.photos:
            from onevision.images import image_media_type

            photo = self.photos[item_id]
            return Response(photo, media_type=image_media_type(photo))
        if item_id not in self.item_image:
            return JSONResponse({"error": f"unknown item {item_id!r}"}, status_code=404)
        return FileResponse(self.root / self.item_image[item_id])

    def _first_time(self, event_id: str) -> bool:
        """Whether this event id is new here within the feedback tokens' lifetime (a replayed click,
        a retried order: counted once). Redis down: let it through; the workers' window of recent
        ids still drops near duplicates."""
        try:
            return bool(self.redis.set(SEEN_KEY.format(event_id), 1, nx=True, ex=self.settings.api.feedback_ttl_s))
        except Exception:  # noqa: BLE001 - degraded, not refused
            return True

    def _forget(self, event_id: str) -> None:
        try:
            self.redis.delete(SEEN_KEY.format(event_id))
        except Exception:  # noqa: BLE001 - expires with its TTL
            pass

    @api.get("/v1/users/{user_id}")
    async def user(self, user_id: str, request: Request) -> Response:
        """A shopper's features (their behaviour): for callers holding the API key only."""
        try:
            if not request.state.trusted:
                check_api_key(self.api_key, request.headers.get(API_KEY_HEADER), "reading a shopper's data")
        except Denied as exc:
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        user, degraded = await self.reads.get(user_id)
        if degraded:
            return JSONResponse({"error": "the online store is unavailable"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse(user)

    @api.post("/v1/events", status_code=202, openapi_extra=openapi_body(**{"application/json": FeedbackBody}))
    async def feedback(self, request: Request) -> Response:
        """A click (with its answer's feedback token) or, with the API key, an order or click:
        checked (`serving.feedback`) and produced to Kafka; 202 once the broker has it."""
        from serving.feedback import Unavailable, feedback_event, produce

        given = request.headers.get(API_KEY_HEADER)
        try:
            body = json.loads(await read_body(request, MAX_EVENT_BYTES))
            e = feedback_event(body, self.signer, self.price, request.state.trusted, bool(given))
        except (Denied, BadRequest) as exc:
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        except ValidationError as exc:
            return JSONResponse({"error": validation_reason(exc)}, status_code=422)
        except (ValueError, TypeError, RecursionError) as exc:  # bad JSON, a missing field, absurd nesting
            return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=422)
        if not await asyncio.to_thread(self._first_time, e.event_id):
            return JSONResponse({"event_id": e.event_id, "duplicate": True}, status_code=202)
        try:
            await produce(self.producer, e, EVENT_ACK_S)
        except Unavailable as exc:
            await asyncio.to_thread(self._forget, e.event_id)  # the client's retry must go through
            self.events_unavailable.inc()
            log.warning("event %s not taken by the broker: %s", e.event_id, exc)
            return JSONResponse({"error": "the event log is unavailable: retry later"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse({"event_id": e.event_id}, status_code=202)

    @api.post("/v1/catalog", status_code=202, openapi_extra=openapi_body(**{"application/json": CatalogChangeBody}))
    async def catalog_change(self, request: Request) -> Response:
        """One catalog change (API key): an item added (its photo base64, title, category, price),
        updated (the fields given) or removed. A photo is encoded with the serving tokenizer by a
        model replica; the change goes to `onevision.catalog`, and every replica and worker applies
        it within seconds. 202 once the broker has it."""
        from onevision.catalog.changes import CatalogChangeError, new_change, photo_text
        from onevision.images import ImageError, load_rgb
        from streaming.catalog_stream import send_changes
        from streaming.producer import now_ms

        try:
            if not request.state.trusted:
                check_api_key(self.api_key, request.headers.get(API_KEY_HEADER), "changing the catalog")
            body = CatalogChangeBody.model_validate(json.loads(await read_body(request, MAX_CATALOG_BYTES)))
            fields = body.model_dump(exclude_unset=True, exclude={"kind", "item_id", "image"})
            if body.image is not None and body.kind != "remove":
                photo = base64.b64decode(body.image, validate=True)
                await asyncio.to_thread(load_rgb, photo)  # a photo that does not decode is refused here
                category = body.category or self.category.get(body.item_id)
                if category is None:
                    raise BadRequest(422, "a new item needs its category")
                price = body.price if "price" in body.model_fields_set else self.price.get(body.item_id)
                try:
                    enc = (await self.model.encode_items.remote([photo], [{"category": category, "price": price}]))[0]
                except Exception as exc:  # noqa: BLE001 - no replica free to encode it now: the caller retries
                    log.warning("catalog change of %s: the photo was not encoded (%s)", body.item_id, exc)
                    return JSONResponse({"error": "the photo could not be encoded now: retry later"}, status_code=503,
                                        headers={"Retry-After": str(RETRY_AFTER_S)})
                fields.update(image=photo_text(photo), **enc)
            change = new_change(body.kind, body.item_id, now_ms(), **fields)
        except (Denied, BadRequest) as exc:
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        except ValidationError as exc:
            return JSONResponse({"error": validation_reason(exc)}, status_code=422)
        except (ImageError, CatalogChangeError, binascii.Error) as exc:
            return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=422)
        except (ValueError, TypeError, RecursionError) as exc:
            return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=422)
        try:
            await asyncio.to_thread(send_changes, self._catalog_producer(), self.settings, [change], EVENT_ACK_S)
        except MessageSizeTooLargeError:
            return JSONResponse({"error": "the change is larger than the catalog topic takes (its photo is too "
                                          "large)"}, status_code=413)
        except Exception as exc:  # noqa: BLE001 - the broker down: the caller retries
            log.warning("catalog change %s not taken by the broker: %s", change.change_id, exc)
            return JSONResponse({"error": "the catalog log is unavailable: retry later"}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse({"change_id": change.change_id, "kind": change.kind, "item_id": change.item_id,
                             "sid": change.sid}, status_code=202)

    def _catalog_producer(self):
        """The catalog topic's producer, made on first use (under a lock: requests run concurrently)."""
        from streaming.producer import kafka_producer

        with self._producer_lock:
            if self.catalog_producer is None:
                self.catalog_producer = kafka_producer(self.settings, max_block_ms=2000)
            return self.catalog_producer

    def _stream_jobs(self) -> list[dict] | None:
        """The stream workers' and the DPO job's liveness (`streaming.status.worker_liveness`);
        None when Redis does not answer. Also sets the `onevision_stream_jobs` gauge."""
        from streaming.status import worker_liveness

        try:
            jobs = worker_liveness(self.settings, self.redis)
        except Exception as exc:  # noqa: BLE001 - Redis down: liveness unknown, the service still answers
            log.warning("stream liveness not read: %s", type(exc).__name__)
            return None
        counts: dict[tuple[str, str], int] = {(j["role"], s): 0 for j in jobs for s in ("alive", "dead")}
        for j in jobs:
            counts[j["role"], "alive" if j["alive"] else "dead"] += 1
        for (role, state), n in counts.items():
            self.stream_jobs.labels(role, state).set(n)
        self.stream_stats.clear()  # the live jobs only: a stopped worker's numbers leave with it
        for j in jobs:
            if j["alive"]:
                for stat, value in j["stats"].items():
                    self.stream_stats.labels(j["role"], str(j["worker_id"]), stat).set(value)
        return jobs

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """The model's versions and swaps, and the stream jobs: `status` is "degraded" when a role
        that ran has no live worker (its dead ones are listed), "ok" otherwise."""
        jobs = await asyncio.to_thread(self._stream_jobs)
        down = sorted({j["role"] for j in jobs or []} - {j["role"] for j in jobs or [] if j["alive"]})
        stream = {"jobs": jobs, "roles_down": down} if jobs is not None else {"jobs": None,
                                                                               "error": "Redis unavailable"}
        health = await self.model.health.remote()
        health["catalog"]["ingress_position"] = self.catalog_position
        return {"status": "degraded" if down or jobs is None else "ok", **health, "stream": stream}

    @api.get("/metrics")
    async def metrics(self) -> PlainTextResponse:
        """Every replica's metrics, merged by the hub (`serving.cluster_metrics`). When the hub does
        not answer within 2 s: 503, not this replica's own counters under the merged names, which
        a scraper would read as counter resets."""
        await asyncio.to_thread(self._stream_jobs)
        if self.reporter is None:  # built without a hub: this process is the whole picture
            return PlainTextResponse(generate_latest(self.metrics).decode(), media_type=CONTENT_TYPE_LATEST)
        try:
            return PlainTextResponse(await self.reporter.merged(), media_type=CONTENT_TYPE_LATEST)
        except Exception as exc:  # noqa: BLE001 - the hub restarting or moving: the scrape fails, nothing else
            log.warning("metrics hub unavailable (%s)", type(exc).__name__)
            return PlainTextResponse("metrics hub unavailable: retry\n", status_code=503,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})


def build(args: dict) -> serve.Application:
    """The application from `serve run`'s args: catalog and registry (paths, or URLs every node
    reads: s3://...; default the settings' `serve` block), experiments (YAML path), settings (a dict
    of `infra.settings.Settings`; the environment's when absent), beam, max_batch_size,
    torch_threads, watch_s (0 = no hot swap), item_stats_s (0 = the catalog's S_conv only), device
    (cpu | cuda | auto: where each SearchModel replica runs the encoder and generator), and
    deployments ({name: Serve deployment options}, applied as `serve run config.yaml` applies its
    `deployments` list; `serving.run --config` passes that list here)."""
    from infra.settings import Settings, load_settings

    settings = args.get("settings") or load_settings().private_dump()
    serve_settings = Settings.model_validate(settings).serve
    catalog = str(args.get("catalog") or serve_settings.catalog)
    registry = str(args.get("registry") or serve_settings.registry)
    experiments = str(args.get("experiments", DEFAULT_EXPERIMENTS))
    options = args.get("deployments") or {}
    threads = args.get("torch_threads")
    hub = MetricsHub.options(**options.get("MetricsHub", {})).bind()
    model = SearchModel.options(**options.get("SearchModel", {})).bind(
        catalog, registry, experiments, beam=int(args.get("beam", 256)),
        max_batch_size=int(args.get("max_batch_size", MAX_BATCH_SIZE)),
        torch_threads=int(threads) if threads else None, watch_s=float(args.get("watch_s", WATCH_S)),
        settings=settings, item_stats_s=float(args.get("item_stats_s", ITEM_STATS_S)),
        device=str(args.get("device", "cpu")), hub=hub)
    return Ingress.options(**options.get("Ingress", {})).bind(model, catalog, settings, experiments, hub=hub)
