"""Decoding benchmark: our trie-constrained beam search vs transformers `generate` with a
Python dict trie (`prefix_allowed_tokens_fn`), same weights, same valid SIDs, same prompts.

For beams 10, 64 and 256, a single query and a batch of 16: median latency per call over
interleaved runs, queries/s, and whether the top-10 SIDs are identical; plus ours with vs
without the constraint (the cost of the trie), and ours with vs without the searcher's
similarity look-ahead (`generator.decode.lookahead`, its bonuses computed per call), each
pair timed in a run of its own, alternating the two and nothing else: next to a call of
transformers' beam search (hundreds of MB allocated and freed, caches flushed) whichever
variant runs right after it pays for it, which at a few milliseconds per call swamps the
trie's cost. Writes <--out>/bench_decode.json.

    python bench/decode.py                              # the small world's generator if the registry has one
    python bench/decode.py --generator data/registry/generator-vrq-small
    python bench/decode.py --smoke --out /tmp/bench     # beams 4 and 16, batches 1 and 2, 2 repeats
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch
from common import options, parse, timed, write_report
from safetensors.numpy import load_file

from onevision.generator.decode.beam import beam_search
from onevision.generator.decode.lookahead import SimilarityGuide
from onevision.generator.decode.reference import dict_trie, generate_reference
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.model import OneVisionGenerator
from onevision.generator.prompt.builder import PromptInputs, PromptTokens, build_prompts
from onevision.generator.rank.searcher import SIMILARITY_WEIGHT
from onevision.generator.sid_items import SIDItems
from training.generator import ITEM_EMBEDDING

SMOKE = {"beams": "4,16", "batches": "1,2", "repeats": 2, "constraint_repeats": 2}


def load_setup(generator: str | None, registry: Path,
               catalog: Path) -> tuple[OneVisionGenerator, np.ndarray, np.ndarray, str]:
    """The generator (default: the one serving `catalog`, if the registry has it), its catalog's
    SIDs and V's item embeddings, or a random small model over random SIDs and embeddings."""
    from onevision.items import load_item_table
    from onevision.registry import current_version, load_version, resolve, resolve_ref
    from serving.models import default_model

    if generator is None and current_version(registry, default_model(catalog)):
        generator = str(registry / default_model(catalog))
    if generator is not None:
        version = resolve(generator, registry)
        config = load_version(version)[1]
        emb = load_file(str(Path(version) / ITEM_EMBEDDING))["embedding"]
        sids = load_item_table(resolve_ref(config["tokenizer"], version)).sids
        return OneVisionGenerator.load(version), sids, emb, str(version)
    torch.manual_seed(0)
    sizes = (71, 35, 17, 16, 16)
    tokens = PromptTokens(sizes, tuple(f"c{i}" for i in range(20)), tuple(f"w{i}" for i in range(500)))
    rng = np.random.default_rng(0)
    sids = rng.integers(0, sizes, (5000, len(sizes)))
    return OneVisionGenerator(tokens, "small").eval(), sids, unit(rng.standard_normal((5000, 256))), \
        "random small generator, 5000 random SIDs"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def prompts(model: OneVisionGenerator, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = model.tokens
    x = build_prompts(t, PromptInputs(rng.standard_normal((n, t.n_visual - 1, 320)).astype(np.float32),
                                      rng.standard_normal((n, 256)).astype(np.float32),
                                      t.scene_ids(["image_search"] * n)))
    return model.embed(x)


def main() -> None:
    ap = options(__doc__)
    ap.add_argument("--generator", default=None,
                    help="registry version or model dir (default: the served generator-vrq-<catalog> if any)")
    ap.add_argument("--beams", default="10,64,256")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--constraint-repeats", type=int, default=31,
                    help="repeats of each pair: constrained/unconstrained, plain/look-ahead")
    args = parse(ap, SMOKE)
    torch.set_grad_enabled(False)
    model, sids, item_emb, source = load_setup(args.generator, args.registry, args.catalog)
    trie = SIDTrie(sids, model.vocab.sizes)
    guide = SimilarityGuide(trie, SIDItems.build(sids, np.zeros(len(sids))), item_emb)
    t0 = time.perf_counter()
    prefixes = dict_trie(model.bart, trie.sids)
    dict_s = time.perf_counter() - t0
    rows = []
    for batch in map(int, args.batches.split(",")):
        x, mask = prompts(model, batch)
        photos = unit(np.random.default_rng(batch).standard_normal((batch, item_emb.shape[1])))
        for beam in map(int, args.beams.split(",")):
            # the loop variables are bound as defaults (the lambdas are only called within this iteration, by timed)
            ours_fn = lambda x=x, mask=mask, beam=beam: beam_search(model.bart, x, mask, trie, beam=beam)  # noqa: E731
            res = timed({"ours": ours_fn,
                         "reference": lambda x=x, mask=mask, beam=beam: generate_reference(model.bart, x, mask,
                                                                                           prefixes, beam)},
                        args.repeats)
            (ours_s, ours), (ref_s, ref) = res["ours"], res["reference"]
            pair = timed({"ours": ours_fn,
                          "free": lambda x=x, mask=mask, beam=beam: beam_search(model.bart, x, mask, trie, beam=beam,
                                                                                constrained=False)},
                         args.constraint_repeats)
            (pair_s, _), (free_s, _) = pair["ours"], pair["free"]
            ahead = timed({"ours": ours_fn,
                           "guided": lambda x=x, mask=mask, beam=beam, photos=photos: beam_search(
                               model.bart, x, mask, trie, beam=beam, guide=guide.bonuses(photos, SIMILARITY_WEIGHT))},
                          args.constraint_repeats)
            (plain_s, _), (guided_s, guided) = ahead["ours"], ahead["guided"]
            top = min(10, beam)
            row = {"batch": batch, "beam": beam, "ours_ms": 1000 * ours_s, "reference_ms": 1000 * ref_s,
                   "ours_qps": batch / ours_s, "reference_qps": batch / ref_s, "speedup": ref_s / ours_s,
                   "ours_paired_ms": 1000 * pair_s, "ours_unconstrained_ms": 1000 * free_s,
                   "constraint_overhead": pair_s / free_s - 1,
                   "ours_lookahead_ms": 1000 * guided_s, "lookahead_overhead": guided_s / plain_s - 1,
                   "lookahead_all_valid": bool(trie.contains(guided.sids.reshape(-1, trie.levels)).all()),
                   "top10_identical": bool((ours.sids[:, :top] == ref[:, :top]).all()),
                   "all_valid": bool(trie.contains(ours.sids.reshape(-1, trie.levels)).all())}
            rows.append(row)
            print(f"batch {batch:>2} beam {beam:>3}: ours {row['ours_ms']:8.1f} ms "
                  f"({row['ours_qps']:7.1f} q/s)  transformers {row['reference_ms']:8.1f} ms "
                  f"({row['reference_qps']:6.1f} q/s)  x{row['speedup']:.1f}  "
                  f"constraint +{100 * row['constraint_overhead']:.1f}%  "
                  f"look-ahead +{100 * row['lookahead_overhead']:.1f}%  "
                  f"top-10 identical {row['top10_identical']}")
    report = {"model": source, "preset": model.preset, "sid_sizes": list(model.vocab.sizes),
              "n_sids": int(len(trie.sids)), "prompt_length": model.tokens.length, "dict_trie_build_s": dict_s,
              "rows": rows,
              "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__}}
    write_report(args, "bench_decode.json", report)


if __name__ == "__main__":
    main()
