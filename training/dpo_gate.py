"""The eval gate of the near-streaming DPO job: a candidate version may serve only if it does not
regress beyond a tolerance on a held-out ORDER set (val-split shopper photos that ended in an
order, with their request-time user features) and on a fixed canary set (catalog images that
must find their own item), searched without the similarity look-ahead (`generator.decode.lookahead`) so
that the generator's own beam is judged, scored against the reference it was trained from and against the
anchor, the version its lineage started from: small losses that each pass against the
previous version cannot add up to a large one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onevision.eval.generative import evaluate_generator, searcher_for
from onevision.generator.data import GeneratorData
from onevision.generator.model import OneVisionGenerator
from training.configs import GateConfig

# how the gate searches; change it with the search, so that scores a manifest stored from
# another search are scored again instead of compared with (`Gate.stored`)
GATE_SEARCH = "constrained beam, similarity re-score, no look-ahead"


@dataclass
class Verdict:
    accepted: bool
    reasons: list[str]
    candidate: dict[str, float]
    reference: dict[str, float]
    anchor: dict[str, float]

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "reasons": self.reasons, "candidate": self.candidate,
                "reference": self.reference, "anchor": self.anchor}


class Gate:
    def __init__(self, data: GeneratorData, model: OneVisionGenerator, config: GateConfig = GateConfig()):
        self.data, self.config = data, config
        examples, queries = data.evaluation("val")
        kinds = queries["kind"].to_numpy()
        # the held-out set: val ORDER queries; a catalog without them (a click log) gates on val CLICKs
        self.kind = "order" if (kinds == "order").any() else "click"
        if self.kind == "click":
            print("dpo gate: no val ORDER queries in this catalog: candidates are gated on the val CLICK set")
        orders = np.flatnonzero(kinds == self.kind)[: config.orders]
        if not len(orders):
            raise ValueError(f"{data.catalog.root} has no val-split queries to gate candidates on")
        self.orders = examples.take(orders)
        self.canary = data.canary(config.canary, config.seed)
        # built once (trie, SID items); each score swaps the model in. No similarity look-ahead: the
        # gate judges the generator, and with the look-ahead V's similarity alone finds most
        # targets, so scrambled weights passed it (tiny world: ORDER HR@4 90.0 against 90.0). No
        # category term either: it does not depend on the generator (and scores stored before it
        # existed stay comparable, GATE_SEARCH)
        self.searcher = searcher_for(model, data, lookahead=False, category_weight=0.0)

    def score(self, model: OneVisionGenerator) -> dict[str, float]:
        """ORDER-set HR@4 / MRR@10 / HR@1 and canary HR@1, in points."""
        model.eval()
        out = {}
        for name, ex in (("order", self.orders), ("canary", self.canary)):
            m = evaluate_generator(model, self.data, ex, np.full(len(ex), "all"), beam=self.config.beam,
                                   searcher=self.searcher)["sets"]["all"]
            keys = ("HR@1", "HR@4", "MRR@10") if name == "order" else ("HR@1",)
            out.update({f"{name}_{k}": round(100 * float(m[k]), 2) for k in keys})
        return out

    @property
    def scored_by(self) -> dict:
        """What the scores depend on: the search and the sets (not the tolerances)."""
        c = self.config
        scored = {"search": GATE_SEARCH, "beam": c.beam, "orders": c.orders, "canary": c.canary, "seed": c.seed}
        return scored if self.kind == "order" else {**scored, "held_out": self.kind}

    def record(self, verdict: Verdict) -> dict:
        """The verdict as a version's manifest stores it, with how it was scored."""
        return {**verdict.to_dict(), "scored_by": self.scored_by}

    def stored(self, record: dict) -> tuple[dict[str, float], dict[str, float]] | None:
        """(reference, anchor) scores from a manifest's gate `record` when this gate scored them
        the same way; None when the version was never gated or was gated another way (an older
        search, other sets), so that it is scored again rather than compared with."""
        if record.get("scored_by") != self.scored_by or not record.get("candidate"):
            return None
        return record["candidate"], record.get("anchor") or record["candidate"]

    def judge(self, candidate: dict[str, float], reference: dict[str, float],
              anchor: dict[str, float] | None = None) -> Verdict:
        c = self.config
        anchor = anchor or reference
        reasons = []
        for key, tol in (("order_HR@4", c.tolerance), ("canary_HR@1", c.canary_tolerance)):
            for name, base in (("reference", reference), ("anchor", anchor)):
                if not np.isfinite(candidate[key]) or candidate[key] < base[key] - tol:
                    reasons.append(f"{key} {candidate[key]:.2f} < {name} {base[key]:.2f} - {tol}")
        return Verdict(not reasons, reasons, candidate, reference, anchor)
