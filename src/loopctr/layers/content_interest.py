"""Content interest: the target item's content attends over the contents of the user's history (MIM-style).

Sourced (MIM, Yan et al. 2025, arXiv 2502.00321, abstract): ID embeddings miss what users like about an item's
content, above all for cold-start and long-tail items; MIM's CiUBM stage "integrates multi-modal embeddings and
ID-based collaborative filtering signals into a unified framework" of user-behaviour modelling, from frozen
content embeddings made upstream (its pre-training and contrastive C-SFT stages, which loopctr leaves to the
user: the vectors come from a file, `loopctr prepare --content item_id=FILE`).

Inferred here (the module's equations are not in the reference):
- content vectors are frozen (a buffer: saved with the weights, exported and served, never trained), L2-normalised
  (so the scale of whatever produced them does not matter) and mapped to the model's space by one trainable
  Linear, c(i) = W v(i) / |v(i)| + b; items without a vector (and padding, OOV) get c = b;
- scores s_j = <c(target), c(event_j)> / sqrt(dim), softmax over the row's events;
- the output fuses both paths: [c(target), sum_j w_j c(event_j), sum_j w_j e_j], the last the history's ID
  embeddings e_j weighted by *content* similarity (an ID interest the target's content selects, which still
  works when the target's own ID embedding is untrained, as for a cold item). Models concatenate it to their
  read-out (DIN's MLP input, LoopCTR's head input).
Computed on the jagged events, never on padding; `layers/reference.py` has the padded reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loopctr.data.batch import Batch


class ContentInterest(nn.Module):
    """`dim`: the content's projected size; `event_dim`: the size of the ID events the model passes in. Its
    vectors are attached (`attach`) once the dataset's content vectors are known."""

    def __init__(self, dim: int, event_dim: int):
        super().__init__()
        self.dim = dim
        self.out_dim = 2 * dim + event_dim
        self.proj: nn.Linear | None = None
        self.target_field = self.history_field = ""

    @property
    def attached(self) -> bool:
        return self.proj is not None

    def attach(self, vocab_size: int, content_dim: int, target_field: str, history_field: str) -> None:
        """Zero vectors of this shape (filled by `load` or by a checkpoint), for `target_field` (B,) ids and the
        sequence field `history_field` of the same vocabulary."""
        self.register_buffer("vectors", torch.zeros(vocab_size, content_dim))
        self.proj = nn.Linear(content_dim, self.dim)
        self.target_field, self.history_field = target_field, history_field

    def reset_parameters(self, std: float | None = None) -> None:
        """The projection N(0, std) with zero bias, so that the content starts at the scale of the features it
        joins (DIN's input: embeddings of std 1e-4, which a content path of size 1 would drown: the MLP's batch
        norm would scale the ID path down by the content's spread); None: Xavier-normal (a normalised read-out)."""
        if self.proj is None:
            return
        if std is None:
            nn.init.xavier_normal_(self.proj.weight)
        else:
            nn.init.normal_(self.proj.weight, std=std)
        nn.init.zeros_(self.proj.bias)

    def load(self, matrix) -> None:
        with torch.no_grad():
            self.vectors.copy_(torch.as_tensor(matrix))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> their projected content (..., dim)."""
        return self.proj(F.normalize(F.embedding(ids, self.vectors), dim=-1))

    def forward(self, batch: Batch, events: torch.Tensor) -> torch.Tensor:
        """events (T, event_dim): the ID embeddings of the history's events -> (B, out_dim)."""
        history = batch.jagged(self.history_field)
        target = self.embed(batch.features[self.target_field])  # (B, dim)
        items = self.embed(history.values[self.history_field])  # (T, dim)
        scores = (target.index_select(0, history.row_index) * items).sum(-1) * self.dim ** -0.5
        weights = history.segment_softmax(scores).unsqueeze(-1)
        return torch.cat([target, history.segment_sum(weights * items), history.segment_sum(weights * events)], -1)
