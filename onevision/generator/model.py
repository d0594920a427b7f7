"""The generator: BART whose decoder position t may only emit SID level t's codes.

The encoder reads `inputs_embeds` (visual tokens projected from V's grid, user SIDs, ...); the
decoder starts from BOS and emits the L SID tokens. Restricting position t's softmax to level
t's code range is what the trie would enforce anyway, and it lets a decoder compute only that
level's logits (`level_logits`) while scoring exactly like `forward` does, so the fast beam
search and transformers' `generate` agree token for token.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from transformers import BartConfig, BartForConditionalGeneration

from onevision.generator.prompt.builder import PromptTokens
from onevision.generator.prompt.token_pruning import prune_span
from onevision.generator.prompt.vocab import BOS, EOS, PAD, SIDVocab
from onevision.generator.prompt.vocab import SEP as SEP_TOKEN

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
        positions = torch.arange(first, first + t, device=out.logits.device).clamp(max=self.vocab.levels)
        out.logits = out.logits + self.level_mask[positions].to(out.logits.dtype)
        return out


GRID_DIM, EMBED_DIM = 320, 256  # V's token and embedding sizes (encoders.aligned)
SIM_SCALE = 10.0  # hint cosines differ in the second decimal; scaled so their projection learns at the embeddings' pace
WEIGHTS = "generator.safetensors"


class OneVisionGenerator(torch.nn.Module):
    """SIDBart plus the projections that turn V's features into encoder inputs.

    `embed` builds inputs_embeds from a `Prompts` batch (token embeddings for the text, SID and
    scene slots, projected grid tokens and embedding for the visual slots); `sid_logprob`
    scores given SIDs by teacher forcing with the same level-restricted logits the beam search
    uses; `category_logits` serves the category pretraining tasks, whose decoder starts from
    SEP instead of BOS and reads the category tokens' logits.

    `visual_keep` (OneVision 3.3): with it, the encoder's output keeps only that many of the
    prompt's visual tokens (`token_pruning.prune_span`) before anything decodes from it, so the
    decoder's cross-attention reads fewer tokens; None keeps them all."""

    def __init__(self, tokens: PromptTokens, preset: str = "small", visual_keep: int | None = None):
        super().__init__()
        self.tokens: PromptTokens = tokens
        self.preset = preset
        self.visual_keep = visual_keep
        self.bart = SIDBart(bart_config(tokens.vocab, preset, max_positions=max(128, tokens.length + 8)))
        d = self.bart.config.d_model
        self.grid_proj = torch.nn.Linear(GRID_DIM, d)
        self.embed_proj = torch.nn.Linear(EMBED_DIM, d)
        # each hint's cosine to the photo and its gap to the nearest hint's, added to the hint's SID tokens
        self.hint_proj = torch.nn.Linear(2, d) if tokens.hint_similarity and tokens.n_hints else None
        # the V embedding of each SID slot's items (generator.sid_content), added to the slot's tokens
        self.content_proj = torch.nn.Linear(EMBED_DIM, d) if tokens.sid_content else None
        self.register_buffer("slot_positions", torch.from_numpy(tokens.sid_slots.reshape(-1)), persistent=False)

    @property
    def vocab(self) -> SIDVocab:
        return self.bart.vocab

    @property
    def device(self) -> torch.device:
        """Where the weights are; every tensor the model makes is made there, and prompts built on
        the host are moved there once, in `embed`."""
        return self.grid_proj.weight.device

    def embed(self, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        if prompts.ids.shape[1] != self.tokens.length:
            raise ValueError(f"prompts of {prompts.ids.shape[1]} tokens, the model reads {self.tokens.length} "
                             f"({self.tokens.n_hints} image SIDs): build them with the model's PromptTokens")
        prompts = prompts.to(self.device)
        x = self.bart.get_input_embeddings()(prompts.ids)
        start = self.tokens.visual_start
        n_grid = prompts.grid.shape[1]
        visual = torch.cat([self.grid_proj(prompts.grid), self.embed_proj(prompts.embedding)[:, None]], dim=1)
        x = torch.cat([x[:, :start], visual, x[:, start + n_grid + 1:]], dim=1)
        if self.hint_proj is not None:
            sim = prompts.hint_similarity
            feats = SIM_SCALE * torch.stack([sim, sim[:, :1] - sim], dim=-1)  # (B, H, 2)
            extra = self.hint_proj(feats).repeat_interleave(self.tokens.levels, dim=1)  # (B, H * L, d)
            h0, h1 = self.tokens.hint_start, self.tokens.hint_start + extra.shape[1]
            x = torch.cat([x[:, :h0], x[:, h0:h1] + extra, x[:, h1:]], dim=1)
        if self.content_proj is not None:
            content = self.content_proj(prompts.sid_content).repeat_interleave(self.tokens.levels, dim=1)
            x = x.index_add(1, self.slot_positions, content.to(x.dtype))  # autocast: the projection may be bf16
        mask = torch.cat([prompts.mask[:, :start], torch.ones(len(x), n_grid + 1, dtype=prompts.mask.dtype,
                                                              device=x.device),
                          prompts.mask[:, start + n_grid + 1:]], dim=1)
        return x, mask

    @property
    def n_visual_kept(self) -> int:
        return self.tokens.n_visual if self.visual_keep is None else min(self.visual_keep, self.tokens.n_visual)

    def encode(self, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states and mask, the visual tokens pruned to `visual_keep`.

        In training, positions that are empty (mask 0) in every prompt of the batch are left out
        before the encoder runs: no attention reads them and nothing decodes from them, so the
        other states are the same up to float rounding, at a fraction of the cost (an SFT batch has
        no user slots: 64 of 102 positions stay; a pretraining batch 31). They keep their own
        position embeddings (BART adds 0..n-1; the difference to the original positions is added
        here). Inference keeps the full layout, so a search reads nothing back to the host first."""
        x, mask = self.embed(prompts)
        visual_start = self.tokens.visual_start
        keep = mask.bool().any(0) if self.training else None
        if keep is not None and not bool(keep.all()):
            cols = keep.nonzero().squeeze(1)
            table = self.bart.get_encoder().embed_positions
            moved = table.weight[cols + table.offset] - table.weight[table.offset:table.offset + len(cols)]
            x, mask = x[:, cols] + moved, mask[:, cols]
            visual_start = int(keep[:visual_start].sum())
        enc = self.bart.get_encoder()(inputs_embeds=x, attention_mask=mask).last_hidden_state
        enc, mask, _ = prune_span(enc, mask, visual_start, self.tokens.n_visual, self.n_visual_kept)
        return enc, mask

    def level_logprobs(self, prompts, sids: torch.Tensor, encoded=None) -> list[torch.Tensor]:
        """Teacher-forced along each SID (N, L): per level, the level-restricted log-softmax
        (N, K_level) of the next code given the SID's codes before it."""
        enc, mask = encoded if encoded is not None else self.encode(prompts)
        flat = sids.reshape(-1, sids.shape[-1]).to(enc.device)
        reps = flat.shape[0] // enc.shape[0]
        if reps > 1:
            enc, mask = enc.repeat_interleave(reps, 0), mask.repeat_interleave(reps, 0)
        tokens = flat + torch.from_numpy(self.vocab.offsets).to(enc.device)
        dec_in = torch.cat([torch.full((len(flat), 1), BOS, dtype=torch.long, device=enc.device), tokens[:, :-1]],
                           dim=1)
        hidden = self.bart.get_decoder()(input_ids=dec_in, encoder_hidden_states=enc,
                                         encoder_attention_mask=mask).last_hidden_state
        return [torch.log_softmax(self.bart.level_logits(hidden[:, level], level).float(), dim=-1)
                for level in range(self.vocab.levels)]

    def sid_logprob(self, prompts, sids: torch.Tensor, encoded=None) -> torch.Tensor:
        """Log-probability of each SID (B, L) or of each of several SIDs per prompt (B, C, L):
        the sum over levels of the level-restricted log-softmax."""
        flat = sids.reshape(-1, sids.shape[-1]).to(self.device)
        total = torch.zeros(len(flat), device=self.device)
        for level, logp in enumerate(self.level_logprobs(prompts, sids, encoded)):
            total = total + logp.gather(1, flat[:, level:level + 1]).squeeze(1)
        return total.reshape(sids.shape[:-1])

    def category_logits(self, prompts, encoded=None) -> torch.Tensor:
        enc, mask = encoded if encoded is not None else self.encode(prompts)
        dec_in = torch.full((len(enc), 1), SEP_TOKEN, dtype=torch.long, device=enc.device)
        hidden = self.bart.get_decoder()(input_ids=dec_in, encoder_hidden_states=enc,
                                         encoder_attention_mask=mask).last_hidden_state[:, 0]
        start = self.tokens.category_offset
        end = start + len(self.tokens.categories)
        return hidden @ self.bart.lm_head.weight[start:end].T + self.bart.final_logits_bias[0, start:end]

    def config(self) -> dict:
        out = {"kind": "onevision-generator", "preset": self.preset, "tokens": self.tokens.config()}
        return out if self.visual_keep is None else {**out, "visual_keep": self.visual_keep}

    def save(self, folder) -> dict:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_model(self, str(folder / WEIGHTS))  # handles BART's tied embeddings
        return {WEIGHTS: folder / WEIGHTS}

    @classmethod
    def from_config(cls, config: dict) -> "OneVisionGenerator":
        if config.get("kind") != "onevision-generator":
            raise ValueError(f"not a generator config (kind {config.get('kind')!r})")
        return cls(PromptTokens.from_config(config["tokens"]), config["preset"], config.get("visual_keep"))

    @classmethod
    def load(cls, folder, config: dict | None = None) -> "OneVisionGenerator":
        """From a registry version (checked against its manifest) or a checkpoint folder with `config`."""
        if config is None:
            from onevision.registry import load_version

            config = load_version(folder)[1]
        model = cls.from_config(config)
        load_model(model, str(Path(folder) / WEIGHTS))
        return model.eval()
