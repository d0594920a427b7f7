"""GPU benchmark (issue 24): what an accelerator buys each part of the system, in one prepared run on
whatever device is present (`--device auto`), with the CPU measured alongside.

- train: N optimizer steps of each generator stage (pretrain, SFT, personalized SFT, DPO, distill)
  through the recipes' own code (`training/<stage>.py` `run`, `training.distill.distill`, each over
  `training.loop.run_stage` on the current `Runtime`), with a fresh `--preset` model (paper: BART 6+6,
  hidden 768) on the world's examples, each stage's set cut (cycled where too small) to steps x batch,
  so that one epoch is exactly N steps; the stages run in order on the same model, as `train all`
  does, and distill's teacher is that model. Per stage and device: steps/s and examples/s by
  run_stage's own clock (its loop, from the first batch to the last optimizer step: the loss is read
  on the host every step, so at most the last step's backward is still running on a GPU when the clock
  stops), the precision it ran in, and the peak GPU memory. The device runs `--steps` after
  `--warmup` untimed ones; the CPU `--cpu-steps` (fewer: a paper-sized step takes seconds there),
  with no warm-up; the CPU baseline is skipped when the device is the CPU, except under --smoke,
  which runs it anyway so that its code path is exercised.
- beam: our trie-constrained beam search against transformers' `generate` with a dict trie (as
  bench/decode.py compares them) at `--beam`, one query at a time on the device, with a `--preset`
  model of random, seeded weights over `--n-sids` random SIDs of `--sid-sizes` (the paper's
  codebooks): median latency over `--repeats` interleaved runs (the device synchronized after each
  call), whether the top-10 SIDs are identical, ours again under the device's mixed precision (where
  it has one), and the host reads of one decode (`onevision.device.DeviceAudit`; 4 expected: the SIDs
  and the scores, each copied once at the end).
- batching: the served path, `GenerativeSearcher.search` (its look-ahead on, the beam at `--beam`)
  over those SIDs as the catalog's items, at each of `--batches`: queries/s and the gain over batch 1.

A section (or a stage) that fails is recorded under "errors" with its traceback's end, the others
still run and the report is written after every section; the exit status is then 1. Writes
<--out>/bench_gpu.json.

    python bench/gpu.py --catalog data/worlds/tiny --work /dev/shm/gpu   # a GPU machine: the tiny world's
                                                    # examples (its registry and feature cache under --data),
                                                    # the paper-sized checkpoints in memory
    python bench/gpu.py --sections beam,batching    # no world needed
    python bench/gpu.py --smoke --out /tmp/bench    # tiny preset, 2 steps, beam 16 over 2000 SIDs, batches 1
                                                    # and 4: every section on the CPU in well under a minute
"""

from __future__ import annotations

import copy
import gc
import os
import platform
import shutil
import time
import traceback
from dataclasses import replace

import numpy as np
import torch
from common import options, parse, write_report
from decode import prompts, timed, unit

from onevision.device import DeviceAudit, autocast, resolve_device
from onevision.generator.decode.beam import beam_search, decode
from onevision.generator.decode.reference import dict_trie, generate_reference
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.model import EMBED_DIM, GRID_DIM, OneVisionGenerator
from onevision.generator.prompt.builder import PromptInputs, PromptTokens, build_prompts
from onevision.generator.rank.searcher import GenerativeSearcher, SearchCatalog, SearchConfig
from onevision.tokenizers import PAPER_SIZES
from training.runtime import Runtime, use_runtime

SMOKE = {"preset": "tiny", "steps": 2, "cpu_steps": 2, "warmup": 1, "beam": 16, "n_sids": 2000,
         "sid_sizes": "71,35,17,16,16", "batches": "1,4", "repeats": 2}
STAGES = ("pretrain", "sft", "personalized-sft", "dpo", "distill")
SECTIONS = ("train", "beam", "batching")
PRECISION = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced(fn, device: torch.device):
    """`fn`, returning only once the device has finished its work."""
    def call():
        out = fn()
        sync(device)
        return out
    return call


def failure(errors: dict, key: str) -> str:
    """Record the exception being handled under `key`; its traceback's end."""
    tail = "".join(traceback.format_exc().splitlines(keepends=True)[-12:])
    errors[key] = tail
    print(f"FAILED {key}:\n{tail}", flush=True)
    return tail


# -- train ------------------------------------------------------------------------------

def cycled(ex, n: int, seed: int):
    """`n` of the examples: seeded permutations of them, one after another as often as needed."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(len(ex)) for _ in range(-(-n // len(ex)))])[:n]
    return ex.take(idx)


def limited(data, sets: dict, n: int, seed: int):
    """`data` as the recipes read it, each stage's example set cut to `n` examples."""
    out = copy.copy(data)
    out.pretrain = lambda seed_=0: cycled(sets["pretrain"], n, seed)
    out.sft = lambda: cycled(sets["sft"], n, seed)
    out.personalized = lambda seed_=0, **_: cycled(sets["personalized"], n, seed)
    out.dpo = lambda max_negatives=8: cycled(sets["dpo"], n, seed)
    return out


def example_sets(data, seed: int) -> dict:
    """Each stage's full example set, built once. DPO's only from the sessions with a logged negative
    (where there is one), so the recipe takes every example given and computes no beam negatives."""
    dpo = data.dpo()
    with_negative = np.flatnonzero((dpo.candidates[:, 1:] >= 0).all(-1).any(-1))
    return {"pretrain": data.pretrain(seed), "sft": data.sft(), "personalized": data.personalized(seed),
            "dpo": dpo.take(with_negative) if len(with_negative) else dpo}


def stage_cfg(stage: str, args):
    from training.distill import preset_config
    from training.generator import stage_config

    cfg = preset_config(args.preset, seed=args.seed, max_examples=0) if stage == "distill" \
        else stage_config(stage, args.preset, args.seed)
    return replace(cfg, epochs=1, batch_size=args.batch_size or cfg.batch_size)


def train_on(device: torch.device, steps: int, warmup: int, args, data, sets: dict, errors: dict) -> list[dict]:
    """Each stage for `warmup` untimed then `steps` timed steps on `device`, a fresh model."""
    from training.distill import distill
    from training.generator import STAGES as RECIPES

    rt = Runtime(str(device), args.precision, progress=False)
    torch.manual_seed(args.seed)
    model = OneVisionGenerator(data.tokens, args.preset)
    rows = []
    with use_runtime(rt):
        for stage in STAGES:
            cfg = stage_cfg(stage, args)
            row = {"stage": stage, "device": device.type, "precision": PRECISION[rt.amp],
                   "batch_size": cfg.batch_size, "warmup_steps": warmup}
            try:
                for phase, n in (("warmup", warmup), ("timed", steps)):
                    if not n:
                        continue
                    workdir = args.work / device.type / f"{stage}-{phase}"
                    shutil.rmtree(workdir, ignore_errors=True)
                    if device.type == "cuda":
                        sync(device)
                        torch.cuda.reset_peak_memory_stats(device)
                    part = limited(data, sets, n * cfg.batch_size, args.seed)
                    if stage == "distill":  # the teacher stays the model the stages before trained
                        _, log = distill(model, part, cfg, workdir, progress=False)
                    else:
                        log = RECIPES[stage].run(model, part, cfg, workdir, False)
                    shutil.rmtree(workdir, ignore_errors=True)
                if device.type == "cuda":
                    row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                seconds = log["seconds"]
                row.update(steps=log["step"], examples=log["step"] * cfg.batch_size, seconds=round(seconds, 3),
                           steps_per_s=round(log["step"] / seconds, 3),
                           examples_per_s=round(log["step"] * cfg.batch_size / seconds, 1),
                           final_loss=round(log["losses"][-1], 4))
                print(f"train {stage:>16} on {device.type}: {row['steps']} steps in {seconds:7.2f} s, "
                      f"{row['steps_per_s']:8.3f} steps/s, {row['examples_per_s']:9.1f} examples/s "
                      f"({row['precision']}{', peak %.0f MB' % row['peak_gpu_mb'] if 'peak_gpu_mb' in row else ''})",
                      flush=True)
            except Exception:
                row["error"] = failure(errors, f"train/{device.type}/{stage}")
            rows.append(row)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def train_section(args, device: torch.device, report: dict, errors: dict, write) -> None:
    from common import served_generator

    catalog, version, data, served = served_generator(args, progress=False)
    sets = example_sets(data, args.seed)
    size = OneVisionGenerator(data.tokens, args.preset)
    cpu_baseline = args.cpu_steps > 0 and (device.type != "cpu" or args.smoke)
    section = report["train"] = {
        "preset": args.preset, "parameters": sum(p.numel() for p in size.parameters()),
        "catalog": catalog.name, "examples_of": str(version), "prompt_length": data.tokens.length,
        "sid_sizes": list(data.tokens.sizes), "available_examples": {k: len(v) for k, v in sets.items()},
        "device_steps": args.steps, "cpu_steps": args.cpu_steps if cpu_baseline else 0,
        "note": ("steps/s by run_stage's own clock; the CPU runs fewer steps and no warm-up"
                 + ("; the device is the CPU: the baseline only exercises the path (--smoke)"
                    if cpu_baseline and device.type == "cpu" else "")),
        "rows": []}
    del size, served
    ours = train_on(device, args.steps, args.warmup, args, data, sets, errors)
    section["rows"] += ours
    write()
    if cpu_baseline:
        cpu = train_on(torch.device("cpu"), args.cpu_steps, 0, args, data, sets, errors)
        section["rows"] += cpu
        section["speedup_vs_cpu"] = {a["stage"]: round(a["steps_per_s"] / b["steps_per_s"], 2)
                                     if "steps_per_s" in a and "steps_per_s" in b else None
                                     for a, b in zip(ours, cpu)}


# -- beam and batching -------------------------------------------------------------------

def synthetic(args, device: torch.device) -> tuple[OneVisionGenerator, np.ndarray]:
    """A `--preset` generator of seeded random weights on `device` and `--n-sids` random SIDs."""
    sizes = tuple(map(int, args.sid_sizes.split(",")))
    torch.manual_seed(args.seed)
    tokens = PromptTokens(sizes, tuple(f"c{i}" for i in range(20)), tuple(f"w{i}" for i in range(500)))
    sids = np.random.default_rng(args.seed).integers(0, sizes, (args.n_sids, len(sizes)))
    return OneVisionGenerator(tokens, args.preset).eval().to(device), sids


def raw_prompts(tokens: PromptTokens, n: int, seed: int):
    """`n` prompts of random photos (unit embeddings) and no user, as serving builds them."""
    rng = np.random.default_rng(seed)
    grid = rng.standard_normal((n, tokens.n_visual - 1, GRID_DIM)).astype(np.float32)
    return build_prompts(tokens, PromptInputs(grid, unit(rng.standard_normal((n, EMBED_DIM))),
                                              tokens.scene_ids(["image_search"] * n)))


@torch.no_grad()
def beam_section(args, device: torch.device, model: OneVisionGenerator, trie: SIDTrie, report: dict,
                 errors: dict) -> None:
    beam = args.beam
    t0 = time.perf_counter()
    prefixes = dict_trie(model.bart, trie.sids)
    dict_s = time.perf_counter() - t0
    x, mask = prompts(model, 1, args.seed)  # on the device (`embed` moves them)
    res = timed({"ours": synced(lambda: beam_search(model.bart, x, mask, trie, beam=beam), device),
                 "reference": synced(lambda: generate_reference(model.bart, x, mask, prefixes, beam), device)},
                args.repeats)
    (ours_s, ours), (ref_s, ref) = res["ours"], res["reference"]
    top = min(10, beam)
    section = report["beam"] = {
        "preset": model.preset, "sid_sizes": list(model.vocab.sizes), "n_sids": int(len(trie.sids)), "beam": beam,
        "batch": 1, "repeats": args.repeats, "prompt_length": model.tokens.length, "precision": "fp32",
        "dict_trie_build_s": round(dict_s, 2), "ours_ms": round(1000 * ours_s, 2),
        "reference_ms": round(1000 * ref_s, 2), "speedup": round(ref_s / ours_s, 2),
        "top10_identical": bool((ours.sids[:, :top] == ref[:, :top]).all()),
        "all_valid": bool(trie.contains(ours.sids.reshape(-1, trie.levels)).all())}
    print(f"beam {beam}: ours {section['ours_ms']:.1f} ms, transformers {section['reference_ms']:.1f} ms "
          f"(x{section['speedup']}), top-10 identical {section['top10_identical']}", flush=True)
    amp = Runtime(str(device), args.precision).amp
    if amp is not None:  # ours under the device's mixed precision, against its own fp32 answer
        try:
            def ours_amp():
                with autocast(device, amp):
                    return beam_search(model.bart, x, mask, trie, beam=beam)
            amp_s, amp_out = timed({"amp": synced(ours_amp, device)}, args.repeats)["amp"]
            section["mixed_precision"] = {"precision": PRECISION[amp], "ours_ms": round(1000 * amp_s, 2),
                                          "top10_identical_to_fp32": bool((amp_out.sids[:, :top]
                                                                           == ours.sids[:, :top]).all())}
        except Exception:
            failure(errors, "beam/mixed_precision")
    enc = model.bart.get_encoder()(inputs_embeds=x, attention_mask=mask).last_hidden_state
    decode(model.bart, enc, mask, trie, beam=beam)  # the trie's copy on the device is made before the audit
    with DeviceAudit() as audit:
        decode(model.bart, enc, mask, trie, beam=beam)
    report["device_audit"] = {"host_reads": audit.host_reads, "n_host_reads": len(audit.host_reads),
                              "expected": 4, "ok": len(audit.host_reads) == 4,
                              "devices": sorted(map(str, audit.devices))}
    print(f"one decode reads the host {len(audit.host_reads)} times: {audit.host_reads}", flush=True)


@torch.no_grad()
def batching_section(args, device: torch.device, model: OneVisionGenerator, sids: np.ndarray, report: dict) -> None:
    batches = list(map(int, args.batches.split(",")))
    rng = np.random.default_rng(args.seed)
    catalog = SearchCatalog(sids, rng.random(len(sids)), unit(rng.standard_normal((len(sids), EMBED_DIM))))
    searcher = GenerativeSearcher(model, catalog, SearchConfig(batch_size=max(batches)))
    rows = []
    for batch in batches:
        p = raw_prompts(model.tokens, batch, args.seed + batch)
        seconds, out = timed({"search": synced(lambda p=p: searcher.search(p, beam=args.beam, k=10), device)},
                             args.repeats)["search"]
        rows.append({"batch": batch, "ms": round(1000 * seconds, 2), "queries_per_s": round(batch / seconds, 2),
                     "all_answered": bool((out.items[:, 0] >= 0).all())})
    for row in rows:
        row["gain_vs_batch_1"] = round(row["queries_per_s"] / rows[0]["queries_per_s"], 2)
        print(f"batch {row['batch']:>3}: {row['ms']:9.1f} ms, {row['queries_per_s']:8.1f} queries/s "
              f"(x{row['gain_vs_batch_1']} over batch {rows[0]['batch']})", flush=True)
    report["batching"] = {"path": "GenerativeSearcher.search (look-ahead on)", "beam": args.beam,
                          "n_items": int(len(sids)), "repeats": args.repeats, "rows": rows}


def main() -> None:
    ap = options(__doc__, work="gpu")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (training; the beam's extra run)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="which of train, beam, batching")
    ap.add_argument("--preset", default="paper", help="generator preset: tiny | small | paper")
    ap.add_argument("--steps", type=int, default=20, help="timed steps of each stage on the device")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps of each stage before, on the device")
    ap.add_argument("--cpu-steps", type=int, default=2, help="timed steps of each stage on the CPU (0: none)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch (default: each stage's preset)")
    ap.add_argument("--beam", type=int, default=256)
    ap.add_argument("--n-sids", type=int, default=100_000, help="random SIDs of the beam and batching sections")
    ap.add_argument("--sid-sizes", default=",".join(map(str, PAPER_SIZES)), help="their codebook sizes")
    ap.add_argument("--batches", default="1,8,32", help="batch sizes of the served path")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each decode or search (median)")
    ap.add_argument("--seed", type=int, default=0)
    args = parse(ap, SMOKE)
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}: choose from {', '.join(SECTIONS)}")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    errors: dict[str, str] = {}
    report: dict = {
        "smoke": args.smoke, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or "cpu"),
        "precision": PRECISION[Runtime(str(device), args.precision).amp],
        "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
        "sections": sections, "complete": False, "errors": errors}

    def write() -> None:
        write_report(args, "bench_gpu.json", report)

    if "train" in sections:
        try:
            train_section(args, device, report, errors, write)
        except Exception:
            failure(errors, "train")
        write()
    if {"beam", "batching"} & set(sections):
        try:
            model, sids = synthetic(args, device)
            trie = SIDTrie(sids, model.vocab.sizes)
        except Exception:
            failure(errors, "setup")
        else:
            for name, run in (("beam", lambda: beam_section(args, device, model, trie, report, errors)),
                              ("batching", lambda: batching_section(args, device, model, sids, report))):
                if name in sections:
                    try:
                        run()
                    except Exception:
                        failure(errors, name)
                    write()
    if cuda:
        report["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    report["complete"] = True
    write()
    if errors:
        raise SystemExit(f"{len(errors)} failed: {', '.join(errors)}")


if __name__ == "__main__":
    main()
