"""Stage 4, list-wise DPO (OneVision eq. 10) against a frozen reference, on logged sessions:
the purchased item against clicked-not-bought and exposed-not-clicked items, optionally plus
OneSearch eq. 11's NLL term on the purchased item to keep the policy from drifting. The math is
in `onevision/generator/losses.py` (`dpo_objective`), shared with the streaming DPO job.

A log without exposures (a team's click or order log, or no log at all) gives sessions without
negatives: as OneSearch does, those take the model's own beam (before this stage) minus every
item the query accepts as negatives, so the stage still learns which near misses to push down."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onevision.generator.data import Examples, GeneratorData
from onevision.generator.decode.beam import generate_sids
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.losses import candidate_logprob, dpo_objective
from onevision.generator.model import OneVisionGenerator
from training.loop import StageConfig, done, run_stage
from training.runtime import gather_strided, shard


@dataclass(frozen=True)
class DPOConfig(StageConfig):
    beta: float = 0.1
    nll_weight: float = 1.0  # OneSearch eq. 11's NLL term (`losses.onesearch_nll_term`); 0 = pure eq. 10


PRESETS = {"tiny": DPOConfig(epochs=1, batch_size=32, lr=2e-4), "small": DPOConfig(epochs=1, batch_size=64, lr=1e-4)}
PRESETS["quick"] = PRESETS["small"]


def beam_negatives(model: OneVisionGenerator, data: GeneratorData, ex: Examples, rows: np.ndarray, beam: int = 10,
                   batch: int = 64) -> None:
    """Fill the negatives of `rows` (in place) with the model's top beam SIDs that no accepted
    item of the row holds, best first."""
    trie = SIDTrie(data.table.sids, model.vocab.sizes)
    n_neg = ex.candidates.shape[1] - 1
    accepted = ex.accepted if ex.accepted is not None else ex.target_item[:, None]
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        res = generate_sids(model, ex.prompts(data.tokens, data.bank, part), trie, beam=beam)
        for r, sids, scores in zip(part, res.sids, res.scores):
            good = {tuple(data.table.sids[i]) for i in accepted[r] if i >= 0}
            negs = [s for s, sc in zip(sids, scores) if np.isfinite(sc) and tuple(s) not in good][:n_neg]
            ex.candidates[r, 1:] = -1
            for j, sid in enumerate(negs):
                ex.candidates[r, 1 + j] = sid


def shared_beam_negatives(model: OneVisionGenerator, data: GeneratorData, ex: Examples, rows: np.ndarray) -> None:
    """`beam_negatives` split across data-parallel ranks: each decodes its strided share of `rows`
    and the group sums the shares, so every rank trains on the same negatives and none decodes
    another's rows. A single process decodes them all."""
    mine = shard(rows)
    beam_negatives(model, data, ex, mine)
    ex.candidates[rows, 1:] = gather_strided(ex.candidates[mine, 1:], len(rows), model.device)


def run(model: OneVisionGenerator, data: GeneratorData, cfg: DPOConfig, workdir: Path, progress: bool = True,
        examples: Examples | None = None, reference: OneVisionGenerator | None = None) -> dict:
    if examples is None:
        ex = data.dpo()
        lacking = np.flatnonzero(~(ex.candidates[:, 1:] >= 0).all(-1).any(-1))
        if len(lacking) and not done(workdir):
            kind = data.dpo_positives()[1]
            print(f"dpo: {len(lacking)} of {len(ex)} train {kind} sessions have no logged negative (no exposures): "
                  "negatives from the model's own beam")
            shared_beam_negatives(model, data, ex, lacking)
    else:
        ex = examples
    keep = np.flatnonzero((ex.candidates[:, 1:] >= 0).all(-1).any(-1))  # sessions with at least one negative
    ex = ex.take(keep)
    if len(ex) == 0:
        print("dpo: no train session with a preference to learn (no train orders or clicks): stage skipped")
    ref = reference if reference is not None else copy.deepcopy(model)
    ref.eval().requires_grad_(False)

    def loss_fn(idx: np.ndarray) -> torch.Tensor:
        prompts = ex.prompts(data.tokens, data.bank, idx)
        policy, valid = candidate_logprob(model, prompts, ex.candidates[idx])
        with torch.no_grad():
            reference_lp, _ = candidate_logprob(ref, prompts, ex.candidates[idx])
        return dpo_objective(policy, reference_lp, valid, cfg.beta, cfg.nll_weight, data.levels)

    return run_stage("dpo", model, len(ex), loss_fn, cfg, workdir, progress)
