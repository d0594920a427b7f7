"""The generator: BART whose decoder position t may only emit SID level t's codes.

The encoder reads `inputs_embeds` (visual tokens projected from V's grid, user SIDs, ...); the
decoder starts from BOS and emits the L SID tokens. Restricting position t's softmax to level
t's code range is what the trie would enforce anyway, and it lets a decoder compute only that
level's logits (`level_logits`) while scoring exactly like `forward` does, so the fast beam
search and transformers' `generate` agree token for token.
"""

from __future__ import annotations

import torch
from transformers import BartConfig, BartForConditionalGeneration

from onevision.generator.vocab import BOS, EOS, PAD, SIDVocab

PRESETS = {  # (encoder layers, decoder layers, hidden, heads, ffn)
    "tiny": (1, 1, 32, 2, 64),
    "small": (2, 2, 128, 4, 256),
    "paper": (6, 6, 768, 12, 3072),
}


def bart_config(vocab: SIDVocab, preset: str = "small", max_positions: int = 256) -> BartConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown generator preset {preset!r}; choose from {sorted(PRESETS)}")
    enc, dec, hidden, heads, ffn = PRESETS[preset]
    return BartConfig(vocab_size=vocab.size, d_model=hidden, encoder_layers=enc, decoder_layers=dec,
                      encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn,
                      decoder_ffn_dim=ffn, max_position_embeddings=max_positions, pad_token_id=PAD,
                      bos_token_id=BOS, eos_token_id=EOS, decoder_start_token_id=BOS, forced_eos_token_id=None,
                      dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, scale_embedding=True,
                      sid_sizes=list(vocab.sizes), sid_extra=vocab.extra)


class SIDBart(BartForConditionalGeneration):
    """BART with level-restricted output: position t's logits are -inf outside level t's codes
    (positions past the last level may only emit EOS)."""

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.vocab = SIDVocab(tuple(config.sid_sizes), config.sid_extra)
        bias = torch.full((self.vocab.levels + 1, config.vocab_size), float("-inf"))
        for level in range(self.vocab.levels):
            start, end = self.vocab.level_range(level)
            bias[level, start:end] = 0.0
        bias[self.vocab.levels, EOS] = 0.0
        self.register_buffer("level_mask", bias, persistent=False)

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Logits of level `level`'s codes only, (N, K_level), from decoder states (N, H)."""
        start, end = self.vocab.level_range(level)
        return hidden @ self.lm_head.weight[start:end].T + self.final_logits_bias[0, start:end]

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        t = out.logits.shape[1]
        cache = kwargs.get("past_key_values")
        first = cache.get_seq_length() - t if cache is not None and cache.get_seq_length() else 0
        positions = torch.arange(first, first + t).clamp(max=self.vocab.levels)
        out.logits = out.logits + self.level_mask[positions].to(out.logits.dtype)
        return out
