"""The reference decoder our beam search is checked against: transformers' `generate` with
beam search, constrained by `prefix_allowed_tokens_fn` over a Python dict trie (the usual way
generative retrieval code does it)."""

from __future__ import annotations

import numpy as np
import torch

from onevision.generator.model import SIDBart


def dict_trie(model: SIDBart, sids: np.ndarray) -> dict[tuple[int, ...], list[int]]:
    """Token prefix -> allowed next tokens, for every prefix of every valid SID."""
    prefixes: dict[tuple[int, ...], set[int]] = {}
    for s in model.vocab.tokens(np.asarray(sids)).tolist():
        for level in range(len(s)):
            prefixes.setdefault(tuple(s[:level]), set()).add(s[level])
    return {k: sorted(v) for k, v in prefixes.items()}


@torch.no_grad()
def generate_reference(model: SIDBart, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
                       prefixes: dict[tuple[int, ...], list[int]], beam: int) -> np.ndarray:
    """(B, beam, L) SID codes, best first, from transformers' beam search."""
    levels = model.vocab.levels
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
    out = model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, num_beams=beam,
                         num_return_sequences=beam, max_new_tokens=levels, do_sample=False, length_penalty=0.0,
                         prefix_allowed_tokens_fn=lambda _, ids: prefixes.get(tuple(ids[1:].tolist()), [0]))
    return out[:, 1:levels + 1].reshape(len(inputs_embeds), beam, levels).cpu().numpy() - model.vocab.offsets
