"""Trie-constrained beam search written for speed, not `generate`.

- The encoder runs once per query, and each decoder layer's cross-attention keys and values are
  projected once per query and shared by all of its beams: the beams of a query attend to them
  as extra query rows of one attention call, so nothing of size (beams x prompt) is ever copied
  or reordered. Only the small self-attention caches (one entry per generated level) follow
  the beams.
- Each step computes logits only for the current level's codes (`SIDBart.level_logits`).
- Validity comes from the compiled trie (`SIDTrie.allowed` / `advance`), for whole batches.
- Many queries decode together.
- Optionally a look-ahead (`decode.lookahead.SimilarityGuide`) ranks hypotheses by log-probability + the
  best photo-item similarity under their prefix, so a narrow beam keeps the prefix that holds
  the photo's product; the returned scores stay log-probabilities. Its cost per query does not
  grow with the catalog (`lookahead.Bonuses`).

The decoder step reads SIDBart's own weights (post-LN BART decoder layers), so scores are the
sums of level-restricted log-probabilities that `SIDBart.forward` gives transformers' beam
search; a test checks both return the same SIDs in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from onevision.generator.decode.lookahead import Bonuses
from onevision.generator.decode.trie import SIDTrie
from onevision.generator.model import OneVisionGenerator, SIDBart
from onevision.generator.prompt.builder import Prompts
from onevision.generator.prompt.vocab import BOS


@dataclass
class BeamResult:
    sids: np.ndarray  # (B, beam, L) codes; rows with -inf score are padding
    scores: np.ndarray  # (B, beam) summed log-probabilities, best first


class _Decoder:
    """BART's decoder, one step for (B, W) hypotheses with per-query shared cross-attention."""

    def __init__(self, model: SIDBart, enc: torch.Tensor, enc_mask: torch.Tensor):
        dec = model.get_decoder()
        self.dec, self.layers = dec, dec.layers
        self.heads = model.config.decoder_attention_heads
        b, s, h = enc.shape
        self.head_dim = h // self.heads
        self.scale = self.head_dim ** -0.5
        self.cross = []  # per layer: (K^T, V) of shape (B, heads, d, S) and (B, heads, S, d)
        self.qkv = []  # per layer: the self-attention's q, k and v projections as one (3H, H) linear
        for layer in self.layers:
            att = layer.encoder_attn
            self.cross.append((self._split(att.k_proj(enc)).transpose(2, 3), self._split(att.v_proj(enc))))
            sa = layer.self_attn
            self.qkv.append((torch.cat([sa.q_proj.weight, sa.k_proj.weight, sa.v_proj.weight]),
                             torch.cat([sa.q_proj.bias, sa.k_proj.bias, sa.v_proj.bias])))
        # padding as an additive -inf, so the cross-attention is two matmuls and a softmax
        self.enc_bias = torch.zeros(enc_mask.shape, dtype=enc.dtype, device=enc.device).masked_fill(~enc_mask.bool(),
                                                                                 float("-inf"))[:, None, None, :]
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: (B, W, heads, t, d)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, H) -> (B, heads, N, d)
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def step(self, tokens: torch.Tensor, position: int) -> torch.Tensor:
        """Decoder states (B, W, H) of the tokens (B, W) at `position`."""
        b, w = tokens.shape
        dec = self.dec
        x = dec.embed_tokens(tokens) + dec.embed_positions.weight[position + dec.embed_positions.offset]
        x = dec.layernorm_embedding(x)
        new_kv = []
        for i, layer in enumerate(self.layers):
            att = layer.self_attn
            q, k, v = F.linear(x, *self.qkv[i]).view(b, w, 3, self.heads, self.head_dim).unbind(2)  # (B, W, heads, d)
            k, v = k.unsqueeze(3), v.unsqueeze(3)  # (B, W, heads, 1, d)
            if self.self_kv:
                k = torch.cat([self.self_kv[i][0], k], dim=3)
                v = torch.cat([self.self_kv[i][1], v], dim=3)
            new_kv.append((k, v))
            # a beam attends to its own t <= L cached steps: elementwise, not one tiny SDPA call per beam
            weights = ((q.unsqueeze(3) * k).sum(-1) * self.scale).softmax(-1)  # (B, W, heads, t)
            a = (weights.unsqueeze(-1) * v).sum(3).reshape(b, w, -1)
            x = layer.self_attn_layer_norm(x + att.out_proj(a))
            ca = layer.encoder_attn
            q = ca.q_proj(x).view(b, w, self.heads, self.head_dim).transpose(1, 2) * self.scale  # (B, heads, W, d)
            ck_t, cv = self.cross[i]
            a = ((q @ ck_t + self.enc_bias).softmax(-1) @ cv).transpose(1, 2).reshape(b, w, -1)
            x = layer.encoder_attn_layer_norm(x + ca.out_proj(a))
            x = layer.final_layer_norm(x + layer.fc2(layer.activation_fn(layer.fc1(x))))
        self.self_kv = new_kv
        return x

    def reorder(self, parent: torch.Tensor) -> None:
        """Keep the self-attention caches of the chosen parents (B, W')."""
        b, w = parent.shape
        flat = (torch.arange(b, device=parent.device)[:, None] * self.self_kv[0][0].shape[1] + parent).reshape(-1)
        self.self_kv = [tuple(c.flatten(0, 1).index_select(0, flat).view(b, w, *c.shape[2:]) for c in kv)
                        for kv in self.self_kv]


@torch.no_grad()
def beam_search(model: SIDBart, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, trie: SIDTrie,
                beam: int = 10, constrained: bool = True, guide: Bonuses | None = None) -> BeamResult:
    """Encode the prompts' embeddings once, then `decode`."""
    model.eval()
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
    enc = model.get_encoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
    return decode(model, enc, attention_mask, trie, beam=beam, constrained=constrained, guide=guide)


@torch.no_grad()
def decode(model: SIDBart, enc: torch.Tensor, enc_mask: torch.Tensor, trie: SIDTrie, beam: int = 10,
           constrained: bool = True, guide: Bonuses | None = None) -> BeamResult:
    """Beam search from encoder states (B, S, H) and their mask (B, S). With `guide`
    (`SimilarityGuide.bonuses` of the B photos) hypotheses are ranked by log-probability + the
    bonus of the prefix they make; SIDs come out in that order.

    Everything stays on the encoder states' device (the trie is moved there once); the SIDs and
    scores are copied to the host once, at the end."""
    if guide is not None and not constrained:
        raise ValueError("the similarity look-ahead follows the trie; it needs constrained decoding")
    model.eval()
    b, device = enc.shape[0], enc.device
    trie = trie.to(device)
    guide = guide.to(device) if guide is not None else None
    decoder = _Decoder(model, enc, enc_mask)
    tokens = torch.full((b, 1), BOS, dtype=torch.long, device=device)
    width = 1  # hypotheses per query so far
    nodes = torch.zeros(b, dtype=torch.long, device=device)
    scores = torch.zeros(b, 1, device=device)
    codes = torch.zeros((b, 1, 0), dtype=torch.long, device=device)
    queries = torch.arange(b, device=device)
    offsets = model.vocab.offsets
    for level in range(trie.levels):
        hidden = decoder.step(tokens, level)
        logp = torch.log_softmax(model.level_logits(hidden.reshape(b * width, -1), level).float(), dim=-1)
        if constrained:
            logp = logp.masked_fill(~trie.allowed(level, nodes.clamp(min=0)), float("-inf"))
        k = logp.shape[-1]
        total = (scores.reshape(b * width, 1) + logp).reshape(b, width * k)
        top = min(beam, width * k)
        if guide is None:
            scores, flat = total.topk(top, dim=-1)
        else:
            _, flat = (total + guide.at(level, nodes.reshape(b, width))).topk(top, dim=-1)
            scores = total.gather(1, flat)
        parent, code = flat // k, flat % k
        decoder.reorder(parent)
        rows = (queries[:, None] * width + parent).reshape(-1)
        nodes = trie.advance(level, nodes[rows], code.reshape(-1)) if constrained \
            else torch.zeros(b * top, dtype=torch.long, device=device)
        codes = torch.cat([codes[queries[:, None], parent], code[:, :, None]], dim=-1)
        tokens = code + int(offsets[level])
        width = top
    return BeamResult(codes.cpu().numpy(), scores.cpu().numpy())


@torch.no_grad()
def generate_sids(model: OneVisionGenerator, prompts: Prompts, trie: SIDTrie, beam: int = 10, constrained: bool = True,
                  guide: Bonuses | None = None) -> BeamResult:
    """The generator's SIDs for `prompts`: encode, then `decode` (`guide`: the similarity look-ahead)."""
    model.eval()
    enc, mask = model.encode(prompts)
    return decode(model.bart, enc, mask, trie, beam=beam, constrained=constrained, guide=guide)
