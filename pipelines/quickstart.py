"""The main job (`onevision quickstart`) on embedded defaults, end to end.

Build the small world, score the ANN baselines, align the image encoder and train the VRQ
tokenizer (with its SID report), train the generator's four stages and show a few searches,
start the embedded broker and Redis, start the streaming
feature and session workers, replay the world's event log through Kafka into Feast, start the
search service (Ray Serve: OneVision, MCA and MCA w/o ranking in an A/B test) and the
near-streaming DPO job beside it, let simulated shoppers use it for a while, print the A/B
report, the versions the job published and where the web page is. Later capabilities plug in here.

With `catalog` (a real catalog: an import such as the Grocery Store one, or a team's tables)
no world is built: the catalog is loaded and every step runs on it, with `preset` as the
training preset. A step that needs data the catalog lacks says so in one line and does the
honest part (no event log: nothing is replayed and features start empty); the simulated
shoppers are `serving.simulator.CatalogShoppers` (an assumed behaviour, see there).
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import typer

SESSION_IDLE_S = 10.0  # a session closes (and reaches the DPO job) this long after its last event
TRAINING_PRESETS = ("tiny", "quick", "small")  # what --training (or --preset with --catalog) may be
# training lengths per world unless --training says otherwise (`quick`: the small model trained shorter,
# a faster first run whose val figures come out a little lower; docs/results.md has both)
WORLD_TRAINING = {"tiny": "tiny"}
_STEPS: list[tuple[str, float]] = []  # (step, when it started) of the running quickstart


def step(title: str) -> None:
    """Print a step's header and start its clock (the summary gives each step's time)."""
    typer.secho(title, bold=True)
    _STEPS.append((re.split(r"[:(]", title)[0].strip(), time.perf_counter()))


def step_times() -> dict[str, float]:
    """Seconds per step so far, in order, and the total."""
    now = time.perf_counter()
    ends = [t for _, t in _STEPS[1:]] + [now]
    times = {name: round(end - start, 1) for (name, start), end in zip(_STEPS, ends)}
    return {**times, "total": round(now - _STEPS[0][1], 1)} if _STEPS else {}


@dataclass(frozen=True)
class QuickstartConfig:
    """What `onevision quickstart` runs on; the CLI's options take their defaults from here."""

    preset: str = "small"  # world preset (tiny is for a fast smoke run); with `catalog`, the training preset
    seed: int = 0  # world seed
    reports: Path = Path("reports")
    registry: Path = Path("data/registry")
    services: bool = True  # start the embedded broker and Redis, the workers and the search service
    port: int = 8000  # HTTP port of the search service and its web page
    sim_duration: float = 30.0  # seconds of simulated shoppers against the service
    sim_rate: float = 4.0  # simulated searches per second
    catalog: Path | None = None  # a real catalog to run on instead of the synthetic world
    training: str | None = None  # training lengths (TRAINING_PRESETS); None: the world's, or `preset` with `catalog`


def quickstart(config: QuickstartConfig = QuickstartConfig()) -> None:
    """Build a world, score the ANN baselines, align V and train VRQ, train the generator and show searches,
    start the services and stream features, print where everything is."""
    _STEPS.clear()
    preset, seed, reports, registry = config.preset, config.seed, config.reports, config.registry
    services, port, sim_duration, sim_rate = config.services, config.port, config.sim_duration, config.sim_rate
    from onevision.catalog.format import load_catalog
    from onevision.encoders import get_encoder
    from onevision.eval.ann import evaluate_ann, write_report
    from onevision.world.build import build_world, world_dir
    from onevision.world.config import preset as get_preset

    training = config.training or (preset if config.catalog is not None else WORLD_TRAINING.get(preset, "small"))
    if training not in TRAINING_PRESETS:
        what = "--training" if config.training or config.catalog is None else "--preset (the training preset here)"
        raise ValueError(f"{what} {training}: choose one of {', '.join(TRAINING_PRESETS)}")
    if config.catalog is not None:
        step(f"[1/7] catalog: {config.catalog} (no world built; training preset {training})")
        catalog = load_catalog(config.catalog)
        typer.echo(f"  {catalog_summary(catalog)}")
    else:
        out = world_dir(preset, seed)
        step(f"[1/7] world: {preset} (seed {seed}) -> {out}; training preset {training}")
        s = build_world(get_preset(preset, seed=seed), out)
        typer.echo("  already built, reused" if s.skipped
                   else f"  built in {s.seconds:.0f}s ({s.items_per_second:.0f} items/s)")
        catalog = load_catalog(out)
    from training.point_in_time import point_in_time

    point_in_time(catalog, Path("data/cache/features"))  # item stats as known at each query's time, fresh or reused

    step("[2/7] ANN baselines (faiss over image embeddings, test split)")
    path, table = write_report(catalog, evaluate_ann(catalog, get_encoder("pixels")), reports)
    typer.echo(table)
    # the pretrained 224 px EfficientNet row costs minutes of CPU over every catalog image; the aligned
    # encoder's row (step 3) is the ANN baseline the generator is measured against
    typer.echo(f"  (the pretrained encoder's row: onevision eval ann --catalog {catalog.root} --encoder efficientnet)")

    step("[3/7] image encoder alignment and VRQ tokenizer")
    from onevision.catalog.format import catalog_fingerprint
    from onevision.eval.tokenizer_report import markdown
    from onevision.registry import current_for_catalog, load_version
    from training.tokenizer import cached_aligned_encoder, train_tokenizer

    cache = Path("data/cache/features")
    model = f"tokenizer-vrq-{catalog.name}"
    reused = current_for_catalog(registry, model, catalog_fingerprint(catalog))
    if reused is not None:
        tok_version = reused
        metrics = load_version(tok_version)[0]["metrics"]
        typer.echo(f"  reused {tok_version}")
    else:
        tok_version, metrics = train_tokenizer(catalog, "vrq", registry, cache, preset=training)
    typer.echo(markdown({"vrq": metrics}))
    path, table = write_report(catalog, evaluate_ann(catalog,
                                                     cached_aligned_encoder(catalog, registry, cache, training)),
                               reports)
    typer.echo(table)

    gen_version, student = generator_step(catalog, Path(tok_version), registry, cache, training)

    if services:
        from infra.services import up
        from infra.settings import load_settings

        step("[5/7] embedded services")
        for row in up(load_settings()):
            typer.echo(f"  {row['name']:<6} {row['address']:<22} {'healthy' if row['healthy'] else 'NOT healthy'}")
        typer.echo("  stop them with: onevision infra down")
        stream_features(catalog, Path(tok_version))
        url = serving_step(catalog, Path(tok_version), registry, cache, reports, port, sim_duration, sim_rate)

    typer.secho("\nsummary", bold=True)
    typer.echo(f"  catalog : {catalog.root} ({len(catalog.items)} items, "
               f"{catalog.items['category'].nunique()} categories, "
               f"{len(catalog.queries)} shopper photos, {len(catalog.events)} events)")
    typer.echo(f"  reports : {path} (and .md)")
    typer.echo(f"  VRQ     : {tok_version} (item_sids.parquet inside)")
    typer.echo(f"  model   : {gen_version} (loss curves loss_<stage>.png inside)")
    typer.echo(f"  pruned  : {student} (distilled from it; serving runs it and the DPO job's updates of it)")
    if services:
        typer.secho(f"  web page: {url}", bold=True)
        typer.echo("  stop everything: onevision infra down")
    times = step_times()
    typer.echo("  time    : " + ", ".join(f"{name.split()[0]} {sec:.0f}s" for name, sec in times.items()
                                           if name != "total") + f"; total {times['total'] / 60:.1f} min")
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "quickstart_times.json").write_text(json.dumps(times, indent=1))


LAUNCH = {"adds": 20, "removes": 2, "price_changes": 10}  # the quickstart's catalog change


def catalog_change(catalog, registry: Path, url: str, timeout_s: float = 120.0) -> None:
    """The shop changes while serving: the world's next version (items launched, removed,
    repriced) published to the catalog topic, applied by the running service without a restart, and
    a launched item searched by its photo. A real catalog has no next version to make: say how."""
    import requests

    from infra.settings import load_settings
    from onevision.catalog.format import load_catalog
    from onevision.world.next_version import NextVersion, next_version
    from serving.simulator import world_gap
    from streaming.catalog_stream import publish_diff

    if world_gap(catalog) is not None:
        typer.echo(f"  catalog changes: onevision catalog publish {catalog.root} NEW (NEW: your next catalog version) "
                   "sends them to the running service")
        return
    out = catalog.root.parent / f"{catalog.name}-next"
    got = next_version(catalog.root, out, NextVersion(**LAUNCH, photos_per_item=1))
    def applied() -> int:  # the catalog topic's records the service has applied (a replica's and the ingress's)
        health = requests.get(f"{url}/healthz", timeout=30).json()["catalog"]
        return min(health["position"], health["ingress_position"])

    before, t0 = applied(), time.time()
    counts = publish_diff(load_settings(), catalog.root, out, registry, progress=False)
    while time.time() - t0 < timeout_s and applied() < before + sum(counts.values()):
        time.sleep(0.5)
    typer.echo(f"  catalog change ({out}): {counts['add']} items launched, {counts['remove']} removed, "
               f"{counts['update']} repriced; applied by the service {time.time() - t0:.1f} s after publishing, "
               "no restart")
    item = got["added"][0]
    photo = out / load_catalog(out).items.set_index("item_id").at[item, "image"]
    r = requests.post(f"{url}/v1/search", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
                      data={"user_id": "a-new-shopper", "top_k": "4"}, timeout=60)
    shown = [h["item_id"] for h in r.json().get("items", [])] if r.status_code == 200 else []
    typer.echo(f"  the launched {item}'s photo -> " + ", ".join(("*" if i == item else "") + i for i in shown))


def catalog_summary(catalog) -> str:
    """One line: what a catalog holds, and what it lacks that the steps would use."""
    q, ev, prices = catalog.queries, catalog.events, catalog.items["price"]
    users = set(q["user_id"]) | set(ev["user_id"]) | (set() if catalog.users is None else set(catalog.users["user_id"]))
    splits = ", ".join(f"{n:,} {s}" for s, n in q["split"].value_counts().items())
    kinds = ", ".join(f"{n:,} {k}" for k, n in q["kind"].value_counts().items())
    types = ", ".join(f"{n:,} {t}" for t, n in ev["type"].value_counts().items()) or "no event log"
    known = "prices unknown" if prices.isna().all() else f"{prices.notna().sum():,} prices known"
    return (f"{len(catalog.items):,} items in {catalog.items['category'].nunique()} categories; {len(q):,} shopper "
            f"photos ({splits}; {kinds}); {len(users):,} user{'s' * (len(users) != 1)}; events: {types}; {known}")


def generator_step(catalog, tokenizer: Path, registry: Path, cache: Path, preset: str) -> tuple[Path, Path]:
    """[4/7]: the generator's four stages (reused when already trained), its pruned student (OneVision
    3.3, the model serving runs), then a few searches with CURRENT. Returns (trained run, student)."""
    from onevision.behaviour.backfill import user_context
    from onevision.catalog.history import training_events
    from onevision.generator.image_search import ImageSearch
    from onevision.items import load_item_table
    from onevision.registry import read_version, resolve
    from training.distill import ensure_distilled, preset_config
    from training.generator import GeneratorRecipe, generator_name
    from training.offline_models import ensure_generator

    step("[4/7] generator: pretrain -> SFT -> personalized SFT -> list-wise DPO -> pruning distillation")
    runs, name = Path("data/runs"), generator_name(tokenizer)
    version = ensure_generator(catalog, tokenizer, registry, cache, runs, GeneratorRecipe(preset, name=name))
    config = preset_config(preset)
    student = ensure_distilled(catalog, name, registry, cache, runs, config)
    served = resolve(name, registry)
    student_manifest, student_config = read_version(student)
    # both scored by the distill recipe with the same searcher (the trained run's own val figures
    # may predate changes to the searcher)
    trained, pruned = student_manifest["metrics"]["teacher_val"], student_manifest["metrics"]["val"]
    typer.echo(f"  {version.name}: trained run; {student.name}: pruned to {config.keep} of "
               f"{student_config['tokens']['n_visual']} visual tokens and distilled, served"
               + (f" as updated since by the streaming DPO job ({served.name})" if served != student else ""))
    for set_name in ("click", "order"):
        for label, m in ((version.name, trained[set_name]), (student.name, pruned[set_name])):
            if "HR@1" in m:
                typer.echo(f"  val {set_name:<5} {label} (n={m['n']}): HR@1 {100 * m['HR@1']:.2f}  "
                           f"HR@4 {100 * m['HR@4']:.2f}  MRR@10 {100 * m['MRR@10']:.2f}")
    search = ImageSearch.from_registry(served, catalog)
    split = catalog.queries["split"]
    test = catalog.queries[split == ("test" if (split == "test").any() else "val")].head(3)
    users = user_context(training_events(catalog), load_item_table(tokenizer), test["user_id"].to_numpy(),
                         test["ts"].to_numpy()).features()
    answers = search.search([catalog.path(p) for p in test["image"]], users, k=4)
    for (_, q), answer, user in zip(test.iterrows(), answers, users):
        shown = ", ".join(("*" if h.item_id in q["target_item_ids"] else "") + h.item_id for h in answer.hits)
        flag = "  [low confidence]" if answer.low_confidence else ""
        typer.echo(f"  {q['query_id']} by {q['user_id']} ({len(user['short_sids'])} recent clicks) -> {shown}{flag}")
    typer.echo("  (* = the item the shopper bought or clicked)")
    return version, student


def stream_features(catalog, items: Path) -> None:
    """[6/7]: workers up, the catalog's log replayed through Kafka, one user's live features shown
    (a catalog without a log: nothing to replay, features start empty)."""
    from tqdm import tqdm

    from features.client import feature_store, user_features
    from infra.services import ensure_topics
    from infra.settings import load_settings
    from streaming.launch import start_workers
    from streaming.replay import replay
    from streaming.status import stream_status

    step("[6/7] streaming features: Kafka -> feature + session workers -> Feast on Redis")
    settings = load_settings()
    ensure_topics(settings)
    store = feature_store(settings, backend="redis")
    for row in start_workers(settings, items, session_idle_s=SESSION_IDLE_S):
        typer.echo(f"  {row['name']:<20} pid {row['pid']}  log {row['log']}")
    events = catalog.events.sort_values("ts", kind="stable")
    if events.empty:
        typer.echo("  no event log: nothing to replay; features start empty (the simulated shoppers fill them)")
        typer.echo("  watch it: onevision stream status; stop: onevision infra down")
        return
    on_topic = sum(p["end"] for p in stream_status(settings)["partitions"])
    if on_topic >= len(events):
        typer.echo(f"  the topic already holds {on_topic:,} events: replay skipped")
    else:
        with tqdm(total=len(events), unit="ev", desc="  replay") as bar:
            out = replay(settings, events, progress=bar.update)
        typer.echo(f"  replayed {out['events']:,} events at {out['events_per_s']:,.0f}/s")
    with tqdm(total=len(events), unit="ev", desc="  applied") as bar:
        deadline = time.time() + 600
        while time.time() < deadline:
            st = stream_status(settings)
            done = sum(p["applied"] for p in st["partitions"])
            bar.update(done - bar.n)
            if st["lag"] == 0:
                break
            time.sleep(1)
    for w in st["workers"]:
        if w["alive"]:
            typer.echo(f"  {w['worker_id']}: {w['events']:,} events, freshness p50 {w['freshness_ms_p50']:.0f} ms, "
                       f"DLQ {st['dlq']}")
    acts = events[events["type"].isin(["click", "order"])]
    clicks = acts[(acts["type"] == "click") & (acts["scene"] == "image_search")]
    user = (clicks if len(clicks) else acts if len(acts) else events)["user_id"].value_counts().index[0]
    (row,) = user_features(store, [user])
    typer.echo(f"  {user}: short-term SIDs {row['short_sids']}, long-term SID {row['long_sid']}")
    typer.echo("  watch it: onevision stream status; stop: onevision infra down")


def serving_step(catalog, tokenizer: Path, registry: Path, cache: Path, reports: Path, port: int, duration: float,
                 rate: float) -> str:
    """Fit the cascade for its variants, start the service, let simulated shoppers use it and
    print the experiment's report; returns the web page's address."""
    from infra.settings import load_settings
    from onevision.baselines.mca import registry_name
    from onevision.registry import current_version
    from serving.ab_report import ab_report, experiment_design, markdown
    from serving.access import local_api_key
    from serving.experiments import DEFAULT_EXPERIMENTS, ExperimentConfig
    from serving.launch import start_service
    from serving.models import default_model
    from serving.simulator import CatalogShoppers, load_shoppers, run_traffic
    from streaming.producer import EventProducer, now_ms
    from training.dpo_stream import GROUP, job_versions
    from training.launch import start_dpo_job, stop_dpo_job
    from training.mca import train_mca

    step("[7/7] serving: Ray Serve (OneVision, MCA, MCA w/o ranking), near-streaming DPO, simulated shoppers, "
         "A/B report")
    if current_version(registry, registry_name(catalog.name)) is None:
        version, fit = train_mca(catalog, tokenizer, registry, cache, progress=False)
        typer.echo(f"  MCA ranker fitted on {fit['trained_on']} photos -> {version}")
    settings = load_settings()
    model = default_model(catalog.root)
    started_ms = now_ms()
    gated = (catalog.queries["split"] == "val").any()  # the job's eval gate scores val ORDER (else CLICK) photos
    with ThreadPoolExecutor(2) as pool:  # the service and the DPO job load their models side by side
        starting_job = pool.submit(start_dpo_job, settings, catalog.root, registry, model, cache,
                                   {"max_wait_s": 10}) if gated else None
        try:
            row = start_service(settings, catalog.root, registry, port)
        except Exception:
            if starting_job is not None:  # no job without the service it learns from
                if not starting_job.cancel():  # already starting: let it come up, then stop it
                    wait([starting_job])
                stop_dpo_job(settings)
            raise
        job = starting_job.result() if starting_job is not None else None
    typer.echo(f"  service {row['url']} (pid {row['pid']}, log {row['log']})")
    key_file = "ONEVISION_API__API_KEY" if settings.api.api_key else settings.resolved_state_dir() / "secrets/api.key"
    typer.echo(f"  orders and shoppers' data need the API key (header X-API-Key): {key_file}")
    if job is not None:
        typer.echo(f"  near-streaming DPO job (sessions -> gated versions of {model}, hot-swapped): pid {job['pid']}, "
                   f"log {job['log']}")
    else:
        typer.echo("  no val-split photos: the near-streaming DPO job has no held-out set to gate its versions on; "
                   "not started")
    catalog_change(catalog, registry, row["url"].rstrip("/"))
    shoppers = load_shoppers(catalog)
    if isinstance(shoppers, CatalogShoppers):  # no world ground truth: the assumed behaviour, said out loud
        b = shoppers.behaviour
        typer.echo(f"  simulated shoppers (assumed, not a world): {len(shoppers.user_ids)} users "
                   f"({shoppers.n_synthetic} synthetic) send {len(shoppers.photos):,} held-out photos, click a shown "
                   f"item the photo accepts (p {b.click_top} at the top, position-biased) and order {b.order:.0%} "
                   "of clicks")
    producer = EventProducer(settings)
    stats = run_traffic(row["url"].rstrip("/"), shoppers, producer, rate, duration, api_key=local_api_key(settings))
    producer.close()
    typer.echo(f"  {stats.requests} simulated searches ({stats.errors} failed), {stats.clicks} clicks, "
               f"{stats.orders} orders")
    time.sleep(2)  # the last exposures are logged just after their answers
    try:
        _, unit, weights = experiment_design(ExperimentConfig.load(DEFAULT_EXPERIMENTS), "onevision-vs-mca")
        path, report = ab_report(settings, reports, control="mca", experiment="onevision-vs-mca", unit=unit,
                                 weights=weights)
        typer.echo("  " + markdown(report).replace("\n", "\n  "))
        typer.echo(f"  report: {path} (and .md, .png)")
    except ValueError as exc:  # too little traffic for every variant yet
        typer.echo(f"  no A/B report yet: {exc}")
    if gated:
        time.sleep(SESSION_IDLE_S + 15)  # the last sessions close, and the job trains, gates and publishes on them
        rows = [r for r in job_versions(registry, model, GROUP) if r["stream"].get("published_ms", 0) >= started_ms]
        typer.echo(f"  DPO job so far (this run): {sum(r['status'] == 'accepted' for r in rows)} versions accepted, "
                   f"{sum(r['status'] == 'rejected' for r in rows)} rejected, "
                   f"from {sum(r['stream']['examples'] for r in rows)} purchases; "
                   f"CURRENT {model}/{current_version(registry, model)} (onevision registry list {model})")
    typer.echo(f"  more traffic: onevision sim traffic --catalog {catalog.root}; report: onevision ab report")
    return row["url"]
