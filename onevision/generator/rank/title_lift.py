"""What sells now: a score bonus per title word, learned from the shop's recent purchases.

Tastes move after a model is trained (a colour becomes the fashion, a brand falls out of
favour), and a weight tuned once on val cannot follow them. The near-streaming DPO job
(`training.dpo_stream`) refits this term on its recent sessions every micro-batch and publishes
it with each version, so the ranking a version serves follows the purchases it was trained on.

The fit is a conditional logit over each purchase session's exposed list: the item bought is
chosen among the items shown with probability proportional to
`exp(position[p] + beta x similarity_weight x cos(photo, item) + sum of weight[w] over the item's
title words)`: positions are fixed effects (an item shown first is bought more whatever it is),
the photo similarity the searcher ranks by is the yardstick, and the words' weights, shrunk
towards 0 by an L2 penalty, say how much more (or less) an item with that word is bought than its
position and its similarity explain. Divided by `beta` they are in the searcher's score units:
the searcher adds `sum of weight[w] / beta` for a candidate's words (beta floored at `min_beta`,
each word's bonus clipped at `max_bonus`; the job fits beta once per lineage and then holds it, since lists
the lift itself ordered would measure it ever lower). A word seen in fewer than `min_count` exposures gets no
weight; a list with a non-finite cosine is left out. Everything is in the open: a version's file lists each word
with its weight.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LIFT_FILE = "title_lift.safetensors"
_WORD = re.compile(r"[^\W_]+")


def title_words(title: object) -> tuple[str, ...]:
    """The distinct lower-cased words of a title, in order (none for a missing one)."""
    if not isinstance(title, str):
        return ()
    return tuple(dict.fromkeys(w.lower() for w in _WORD.findall(title)))


@dataclass(frozen=True)
class LiftConfig:
    """How the word weights are fitted: the L2 penalty on them (per session), the exposures a word
    needs, the optimizer's iterations, the floor beta is divided by, the largest bonus of one word
    (score units; an item's is the sum over its words)."""

    l2: float = 0.02
    min_count: int = 30
    iterations: int = 60
    min_beta: float = 0.02  # a list where similarity barely matters would blow the bonuses up
    max_bonus: float = 20.0


@dataclass(frozen=True)
class PurchaseList:
    """One purchase session, as the fit reads it: the items shown in position order, which of
    them were bought, and each one's cosine to the shopper's photo."""

    shown: tuple[str, ...]
    bought: frozenset[str]
    cosine: np.ndarray  # (len(shown),)


@dataclass(frozen=True)
class TitleLift:
    """Word -> bonus in the searcher's score units, and the fit that gave it."""

    words: tuple[str, ...]
    bonus: np.ndarray  # (V,) float64
    fit: dict

    def item_bonus(self, titles: Iterable[object]) -> np.ndarray:
        """(N,) each item's bonus: the sum over its title's words."""
        index = {w: i for i, w in enumerate(self.words)}
        return np.array([sum(self.bonus[index[w]] for w in title_words(t) if w in index) for t in titles],
                        np.float64)

    def top(self, n: int = 10) -> list[tuple[str, float]]:
        """The words with the largest bonuses, either sign, largest first."""
        order = np.argsort(-np.abs(self.bonus), kind="stable")[:n]
        return [(self.words[i], round(float(self.bonus[i]), 3)) for i in order]

    def save(self, path: Path) -> Path:
        from safetensors.numpy import save_file

        save_file({"bonus": np.ascontiguousarray(self.bonus, np.float64)}, str(path),
                  metadata={"words": json.dumps(list(self.words)), "fit": json.dumps(self.fit)})
        return path

    @classmethod
    def load(cls, path: Path) -> "TitleLift":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            bonus = f.get_tensor("bonus").astype(np.float64)
        words = tuple(json.loads(meta.get("words", "[]")))
        if len(words) != len(bonus):
            raise ValueError(f"{path}: {len(words)} words but {len(bonus)} bonuses")
        return cls(words, bonus, json.loads(meta.get("fit", "{}")))

    @classmethod
    def of_version(cls, version: Path) -> "TitleLift | None":
        """The lift a registry version was published with; None when it has none."""
        path = Path(version) / LIFT_FILE
        return cls.load(path) if path.is_file() else None


def fit_title_lift(lists: Sequence[PurchaseList], titles: Mapping[str, object], similarity_weight: float,
                   config: LiftConfig = LiftConfig(), beta: float | None = None) -> TitleLift:
    """The conditional logit of the module's docstring on `lists` (`titles`: item id -> title;
    items it lacks have no words). `beta`: the similarity's coefficient held fixed (a yardstick
    measured before, e.g. on lists no lift had ordered) instead of fitted. Deterministic:
    full-batch L-BFGS from zero."""
    import torch

    lists = [p for p in lists if p.bought & set(p.shown) and len(p.shown) > 1 and np.isfinite(p.cosine).all()]
    words_of = {item: title_words(titles.get(item)) for p in lists for item in p.shown}  # each item's once
    counts = Counter(w for p in lists for item in p.shown for w in words_of[item])
    words = tuple(sorted(w for w, c in counts.items() if c >= config.min_count))
    if not lists or not words:
        return TitleLift(words, np.zeros(len(words)), {"sessions": len(lists), "words": len(words)})
    index = {w: i for i, w in enumerate(words)}
    n = max(len(p.shown) for p in lists)
    vocab = len(words)
    item_words = {item: [index[w] for w in ws if w in index] for item, ws in words_of.items()}
    width = max(1, max(len(v) for v in item_words.values()))
    word_idx = np.full((len(lists), n, width), vocab, np.int64)  # vocab: the padding word, weight 0
    shown = np.zeros((len(lists), n), bool)
    chosen = np.zeros((len(lists), n), np.float64)
    sim = np.zeros((len(lists), n), np.float64)
    for r, p in enumerate(lists):
        for j, item in enumerate(p.shown):
            ws = item_words[item]
            word_idx[r, j, :len(ws)] = ws
            shown[r, j] = True
            chosen[r, j] = item in p.bought
            sim[r, j] = similarity_weight * float(p.cosine[j])
    words_t, shown_t = torch.from_numpy(word_idx), torch.from_numpy(shown)
    chosen_t, sim_t = torch.from_numpy(chosen), torch.from_numpy(sim)
    sim_t = sim_t - (sim_t * shown_t).sum(1, keepdim=True) / shown_t.sum(1, keepdim=True)  # per-list centring
    weight = torch.zeros(vocab, dtype=torch.float64, requires_grad=True)
    position = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    fixed = beta is not None
    beta_t = torch.full((1,), float(beta or 0.0), dtype=torch.float64, requires_grad=not fixed)

    def nll() -> torch.Tensor:
        w = torch.cat([weight, weight.new_zeros(1)])  # index vocab: the padding word
        logits = position + beta_t * sim_t + w[words_t].sum(-1)
        logp = torch.log_softmax(logits.masked_fill(~shown_t, float("-inf")), 1)
        ll = (torch.where(shown_t, logp, torch.zeros_like(logp)) * chosen_t).sum() / len(lists)
        return -ll + 0.5 * config.l2 * (weight * weight).sum()

    opt = torch.optim.LBFGS([weight, position] + ([] if fixed else [beta_t]), max_iter=config.iterations,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    with torch.no_grad():
        before = float(nll())
    opt.step(closure)
    with torch.no_grad():
        after = float(nll())
    b = max(float(beta_t.detach()), config.min_beta)
    bonus = np.clip(weight.detach().numpy() / b, -config.max_bonus, config.max_bonus)
    fit = {"sessions": len(lists), "words": vocab, "beta": round(float(beta_t.detach()), 4), "beta_fixed": fixed,
           "nll_per_session": [round(before, 4), round(after, 4)]}
    if not (np.isfinite(bonus).all() and np.isfinite(after)):  # a fit that diverged teaches nothing
        return TitleLift(words, np.zeros(vocab), {**fit, "diverged": True, "nll_per_session": [before, None]})
    return TitleLift(words, bonus, fit)
