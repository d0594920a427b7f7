"""Trie-constrained beam search written for speed, not `generate`:

- the encoder runs once per query, and the first decoder step runs once per query too; its
  caches (self- and cross-attention keys/values) are then repeated for the beams, so the
  encoder's keys/values are projected once per query, not once per beam;
- each step computes logits only for the current level's codes (`SIDBart.level_logits`);
- validity comes from the compiled trie (`SIDTrie.allowed` / `advance`), batched;
- many queries decode together.

Scores are sums of level-restricted log-probabilities, exactly what `SIDBart.forward` gives
transformers' beam search, so both return the same SIDs in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from onevision.generator.model import SIDBart
from onevision.generator.trie import SIDTrie
from onevision.generator.vocab import BOS


@dataclass
class BeamResult:
    sids: np.ndarray  # (B, beam, L) codes; rows with -inf score are padding
    scores: np.ndarray  # (B, beam) summed log-probabilities, best first


@torch.no_grad()
def beam_search(model: SIDBart, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, trie: SIDTrie,
                beam: int = 10, constrained: bool = True) -> BeamResult:
    model.eval()
    b = inputs_embeds.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
    enc = model.get_encoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
    enc_q, mask_q = enc, attention_mask
    decoder = model.get_decoder()
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    tokens = torch.full((b, 1), BOS, dtype=torch.long)
    mask = attention_mask
    width = 1  # hypotheses per query so far
    nodes = np.zeros(b, dtype=np.int64)
    scores = torch.zeros(b, 1)
    codes_so_far = torch.zeros((b, 1, 0), dtype=torch.long)
    offsets = model.vocab.offsets
    for level in range(trie.levels):
        hidden = decoder(input_ids=tokens, encoder_hidden_states=enc, encoder_attention_mask=mask,
                         past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
        logp = torch.log_softmax(model.level_logits(hidden, level).float(), dim=-1)
        if constrained:
            logp = logp.masked_fill(~trie.allowed(level, np.maximum(nodes, 0)), float("-inf"))
        k = logp.shape[-1]
        total = (scores.reshape(b * width, 1) + logp).reshape(b, width * k)
        top = min(beam, width * k)
        scores, flat = total.topk(top, dim=-1)
        parent, code = flat // k, flat % k
        rows = (torch.arange(b)[:, None] * width + parent).reshape(-1)
        if level == 0:  # one hypothesis per query so far: repeat its caches for the beams
            cache.batch_repeat_interleave(top)
        else:
            cache.reorder_cache(rows)
        if top != width or level == 0:  # the width can still grow while width * K < beam
            enc, mask = enc_q.repeat_interleave(top, 0), mask_q.repeat_interleave(top, 0)
        nodes = trie.advance(level, nodes[rows.numpy()], code.reshape(-1).numpy()) if constrained \
            else np.zeros(b * top, dtype=np.int64)
        codes_so_far = torch.cat([codes_so_far.reshape(b * width, -1)[rows].reshape(b, top, -1),
                                  code[:, :, None]], dim=-1)
        tokens = (code.reshape(-1, 1) + int(offsets[level]))
        width = top
    return BeamResult(codes_so_far.numpy(), scores.numpy())
