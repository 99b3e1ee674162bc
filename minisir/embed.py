"""Sentence embeddings and the OpenSIR diversity score.

Diversity rewards a teacher for problems far (in embedding space) from what the
archive already holds, and from the other problems written in the same step, so a
batch of near-duplicates does not all score as novel.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from . import assets
from .errors import ModelNotFound

log = logging.getLogger(__name__)

# Diversity when a problem has nothing at all to be compared with (empty archive and
# a batch of one). 0.5 is what two orthogonal (unrelated) embeddings score: neutral,
# so the very first problem is not rewarded above anything that comes later.
EMPTY_DIVERSITY = 0.5

# Rows of `new` handled per matmul chunk: bounds memory at (chunk x reference) floats.
_CHUNK_CELLS = 32_000_000


class Embedder:
    """sentence-transformers encoder; outputs float32 L2-normalised rows."""

    def __init__(self, path: str | None = None, device: str | None = None):
        # Offline by default: the bundled model is a local directory and the run
        # machines may have no internet; a hub lookup would only add a timeout.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        resolved = assets.embedder_path(path)
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(resolved, device=device)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(
                f"embedder: could not load sentence-transformers model from {resolved}: {exc}; "
                "pass a sentence-transformers directory or reinstall the bundled one"
            ) from exc
        self.path = resolved
        name = Path(resolved).name
        if name == "model":  # the bundled package keeps weights in .../<pkg>/model
            name = Path(resolved).parent.name
        self.name = name
        getter = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension"
        )
        self.dim = int(getter())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts -> (len(texts), dim) float32, unit L2 norm per row."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return _l2_normalise(np.asarray(vecs, dtype=np.float32))


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


def diversity_scores(new: np.ndarray, reference: np.ndarray, top_k: int = 5) -> np.ndarray:
    """Per row of `new`: (1 - mean of its top-k cosine similarities) / 2, in [0, 1].

    Neighbours are the reference rows AND the other rows of `new` (itself excluded).
    Rows are assumed L2-normalised (Embedder output). When fewer than top_k
    neighbours exist all of them are used; with none at all the score is
    EMPTY_DIVERSITY. One matmul per chunk plus np.partition: O(n * R) and no sort.
    """
    new = np.asarray(new, dtype=np.float32)
    if new.ndim != 2:
        raise ValueError(f"diversity_scores: new must be 2-D, got shape {new.shape}")
    n, d = new.shape
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    if reference is None or len(reference) == 0:
        reference = np.zeros((0, d), dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if reference.ndim != 2 or reference.shape[1] != d:
        raise ValueError(
            f"diversity_scores: reference shape {reference.shape} does not match new dim {d}"
        )
    if top_k < 1:
        raise ValueError("diversity_scores: top_k must be >= 1")
    r = reference.shape[0]
    k = min(top_k, r + n - 1)
    if k == 0:
        return np.full(n, EMPTY_DIVERSITY, dtype=np.float32)

    batch_sims = new @ new.T
    np.fill_diagonal(batch_sims, -np.inf)  # never your own neighbour
    out = np.empty(n, dtype=np.float32)
    rows_per_chunk = max(1, _CHUNK_CELLS // max(r + n, 1))
    for lo in range(0, n, rows_per_chunk):
        hi = min(n, lo + rows_per_chunk)
        sims = np.concatenate([new[lo:hi] @ reference.T, batch_sims[lo:hi]], axis=1) if r else batch_sims[lo:hi]
        top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        out[lo:hi] = (1.0 - np.clip(top.mean(axis=1), -1.0, 1.0)) / 2.0
    return out
