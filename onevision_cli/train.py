"""`onevision train`: the generator's training stages, in order, resumable."""

from __future__ import annotations

from pathlib import Path

import typer

from onevision_cli.errors import user_errors
from onevision_cli.options import ADDRESS, CACHE, CATALOG, DEVICE, PRECISION, REGISTRY, RUNS, WORKERS
from training.configs import DPOStreamRun, GateConfig, GeneratorRecipe, ParallelConfig, StreamConfig

app = typer.Typer(help="Generator training: pretrain -> SFT -> personalized SFT -> list-wise DPO; "
                  "pruning distillation; near-streaming DPO; the MCA baseline.", no_args_is_help=True)


R = GeneratorRecipe()


@app.command("all")
@user_errors
def train_all(
    catalog: Path = CATALOG,
    preset: str = typer.Option(R.preset, help="model size and training lengths: tiny | quick | small | paper "
                                              "(quick: the small model, trained shorter)"),
    tokenizer: str = typer.Option("vrq", help="tokenizer method whose SIDs the generator emits (trained first if "
                                              "missing)"),
    stages: str = typer.Option(",".join(R.stages), help="stages to run, in order"),
    name: str = typer.Option(R.name, help="registry model name (default generator-<method>-<catalog>)"),
    image_sid: str = typer.Option(R.image_sid, help="prompt's image SIDs: nearest-item | tokenizer | none"),
    hints: int = typer.Option(R.hints, help="how many image SIDs (nearest items) the prompt holds (1 for tokenizer, "
                                            "0 for none)"),
    hint_similarity: bool = typer.Option(R.hint_similarity, help="the model also reads each hint's cosine to the "
                                                                 "photo"),
    sid_content: bool = typer.Option(R.sid_content, help="every SID slot of the prompt also carries its items' V "
                                                         "embedding"),
    seed: int = typer.Option(R.seed),
    registry: Path = REGISTRY,
    cache: Path = CACHE,
    runs: Path = RUNS,
    workers: int = WORKERS,
    address: str = ADDRESS,
    device: str = DEVICE,
    precision: str = PRECISION,
) -> None:
    """Run the stages and publish the generator with its validation metrics."""
    from onevision.catalog.format import load_catalog
    from training.generator import train_generator
    from training.offline_models import ensure_tokenizer
    from training.tokenizer import recipe

    c = load_catalog(catalog)
    recipe(preset)  # unknown presets fail before any work
    tok = ensure_tokenizer(c, tokenizer, registry, cache, preset)
    run = GeneratorRecipe(preset, tuple(s.strip() for s in stages.split(",")), seed, name, image_sid, hints,
                          hint_similarity, sid_content)
    parallel = ParallelConfig(workers, address, device, precision)
    version, metrics = train_generator(c, tok, registry, cache, runs, run, parallel=parallel)
    for stage, m in metrics["stages"].items():
        typer.echo(f"  {stage:<18} {m['epochs']} epochs, final loss {m['final_loss']:.4f}, {m['seconds']:.0f}s")
    for set_name, m in metrics["val"].items():
        if "HR@1" in m:
            typer.echo(f"  val {set_name:<5} n={m['n']:<5} HR@1 {100 * m['HR@1']:.2f}  HR@4 {100 * m['HR@4']:.2f}  "
                       f"MRR@10 {100 * m['MRR@10']:.2f}")
    if "distributed" in metrics:
        d = metrics["distributed"]
        typer.echo(f"  trained by {d['workers']} Ray Train workers on {d['device']} in {d['seconds']:.0f}s")
    typer.echo(f"generator -> {version} (loss curves loss_<stage>.png inside)")


@app.command("mca")
@user_errors
def train_mca_cmd(
    catalog: Path = CATALOG,
    preset: str = typer.Option("small", help="tokenizer preset, if the VRQ tokenizer (and its encoder V) must be "
                                             "trained first"),
    registry: Path = REGISTRY,
    cache: Path = CACHE,
) -> None:
    """Fit the MCA cascade's ranker (the serving baseline) and publish it as mca-<catalog>."""
    from onevision.catalog.format import load_catalog
    from training.mca import train_mca
    from training.offline_models import ensure_tokenizer

    c = load_catalog(catalog)
    version, fit = train_mca(c, ensure_tokenizer(c, "vrq", registry, cache, preset), registry, cache)
    typer.echo(f"  ranker trained on {fit['trained_on']} photos "
               f"(recall hit share {100 * fit['recall_hit_share']:.1f}%), final loss {fit['final_loss']:.4f}")
    typer.echo(f"mca -> {version}")


S, G = StreamConfig(), GateConfig()


@app.command("dpo-stream")
@user_errors
def train_dpo_stream(
    catalog: Path = CATALOG,
    model: str = typer.Option(None, help="registry model to improve and publish to (default generator-vrq-<catalog>, "
                                         "the one serving follows)"),
    group: str = typer.Option(S.group, help="Kafka consumer group (also names this job's versions)"),
    micro_batch: int = typer.Option(S.micro_batch, min=1, help="examples (sessions with a purchase) per update"),
    max_wait: float = typer.Option(S.max_wait_s, help="seconds after the first pending example to update anyway"),
    catch_up_batch: int = typer.Option(S.catch_up_batch, min=1, help="examples a version may take when sessions are "
                                                                      "already waiting (the job is behind)"),
    steps: int = typer.Option(S.steps, min=1, help="AdamW steps per micro-batch"),
    lr: float = typer.Option(S.lr),
    beta: float = typer.Option(S.beta, help="eq. 10's beta"),
    nll_weight: float = typer.Option(S.nll_weight, help="OneSearch eq. 11's NLL weight (0: pure eq. 10)"),
    replay: int = typer.Option(S.replay, min=0, help="examples the replay buffer keeps"),
    tolerance: float = typer.Option(G.tolerance, help="gate: ORDER HR@4 points a candidate may lose against its "
                                                      "reference"),
    canary_tolerance: float = typer.Option(G.canary_tolerance, help="gate: canary HR@1 points a candidate may lose"),
    gate_orders: int = typer.Option(G.orders, help="gate: held-out ORDER queries scored"),
    max_idle: float = typer.Option(DPOStreamRun.max_idle_s, help="exit after this many seconds without sessions "
                                                                 "(default: run until stopped)"),
    threads: int = typer.Option(DPOStreamRun.threads, min=1, help="torch threads (the job shares the machine with "
                                                                  "serving)"),
    seed: int = typer.Option(S.seed),
    registry: Path = REGISTRY,
    cache: Path = CACHE,
    log_level: str = typer.Option(DPOStreamRun.log_level),
    device: str = DEVICE,
) -> None:
    """Near-streaming list-wise DPO: session logs from Kafka -> micro-batch updates -> eval gate ->
    registry (serving hot-swaps accepted versions). Resumes from its last published offsets."""
    from serving.models import default_model
    from training.run_dpo_stream import run_dpo_stream, summary

    config = StreamConfig(group=group, micro_batch=micro_batch, max_wait_s=max_wait,
                          catch_up_batch=catch_up_batch, steps=steps, lr=lr, beta=beta,
                          nll_weight=nll_weight, replay=replay, seed=seed,
                          gate=GateConfig(orders=gate_orders, tolerance=tolerance, canary_tolerance=canary_tolerance))
    run = DPOStreamRun(catalog, registry, model or default_model(catalog), cache, config, max_idle, threads, log_level,
                       device)
    typer.echo(summary(run_dpo_stream(run)))


@app.command("distill")
@user_errors
def train_distill(
    catalog: Path = CATALOG,
    keep: int = typer.Option(None, min=1, help="V_sub: visual tokens the pruned model keeps (default: the preset's)"),
    preset: str = typer.Option("small", help="distillation length: tiny | quick | small"),
    model: str = typer.Option(None, help="registry model whose trained run is the teacher and which the student is "
                                         "published to (default generator-vrq-<catalog>, the one serving follows)"),
    epochs: int = typer.Option(None, min=1, help="epochs (default: the preset's)"),
    curriculum: bool = typer.Option(True, help="eq. 12: lower the kept tokens from V_max to V_sub over the epochs"),
    loss: str = typer.Option("kl", help="kl (eq. 11, against the frozen teacher) | ntp (the targets' loss, "
                                        "no teacher)"),
    seed: int = typer.Option(0),
    registry: Path = REGISTRY,
    cache: Path = CACHE,
    runs: Path = RUNS,
    workers: int = WORKERS,
    address: str = ADDRESS,
    device: str = DEVICE,
    precision: str = PRECISION,
) -> None:
    """Prune the generator's visual tokens and distill it from its trained run (OneVision 3.3);
    the student is published as the model's next version and becomes CURRENT (served)."""
    from onevision.catalog.format import load_catalog
    from onevision.registry import resolve, trained_run
    from serving.models import default_model
    from training.distill import distill_generator, preset_config

    c = load_catalog(catalog)
    overrides = {k: v for k, v in (("keep", keep), ("epochs", epochs)) if v is not None}
    config = preset_config(preset, curriculum=curriculum, loss=loss, seed=seed, **overrides)
    teacher = trained_run(resolve(model or default_model(c.root), registry))
    version, metrics = distill_generator(c, teacher, registry, cache, runs, config,
                                         parallel=ParallelConfig(workers, address, device, precision))
    stage = metrics["stages"]["distill"]
    typer.echo(f"  distill: visual tokens per epoch {stage['keep_schedule']}, final loss {stage['final_loss']:.4f}, "
               f"{stage['seconds']:.0f}s")
    for set_name, m in metrics["val"].items():
        t = (metrics.get("teacher_val") or {}).get(set_name, {})
        if "HR@4" in m:
            ref = f" (teacher {100 * t['HR@4']:.2f})" if "HR@4" in t else ""
            typer.echo(f"  val {set_name:<5} n={m['n']:<5} HR@4 {100 * m['HR@4']:.2f}{ref}  "
                       f"MRR@4 {100 * m['MRR@4']:.2f}")
    if "distributed" in metrics:
        d = metrics["distributed"]
        typer.echo(f"  trained by {d['workers']} Ray Train workers on {d['device']} in {d['seconds']:.0f}s")
    typer.echo(f"pruned generator (keeps {config.keep} visual tokens, teacher {teacher.name}) -> {version} (CURRENT)")
