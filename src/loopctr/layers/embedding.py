"""Feature embeddings: one table per vocabulary, so fields that share a vocabulary share their embeddings."""

from __future__ import annotations

import torch
from torch import nn

from loopctr.data.schema import Schema


class FeatureEmbedding(nn.Module):
    """Embeds every feature field of a batch.

    Categorical fields give (B, d), sequence fields (B, L, d) with zeros at padding (index 0), numeric
    fields (B, d) as the value times a learned vector (FuxiCTR's numeric embedding).
    """

    def __init__(self, schema: Schema, vocab_sizes: dict[str, int], dim: int, init_std: float = 1e-4):
        super().__init__()
        self.schema = schema
        self.dim = dim
        self.init_std = init_std
        self.tables = nn.ModuleDict({v: nn.Embedding(vocab_sizes[v], dim, padding_idx=0) for v in schema.vocabularies})
        self.numeric_fields = [f.name for f in schema.of_type("numeric")]
        self.numeric = nn.Embedding(len(self.numeric_fields), dim) if self.numeric_fields else None
        self.reset_parameters()

    def reset_parameters(self):
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=self.init_std)
            with torch.no_grad():
                table.weight[0].zero_()
        if self.numeric is not None:
            nn.init.normal_(self.numeric.weight, std=self.init_std)

    def embed(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        return self.tables[self.schema.field(name).vocab](ids)

    def forward(self, batch: dict[str, torch.Tensor], fields: list[str] | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for f in self.schema.fields:
            if fields is not None and f.name not in fields:
                continue
            if f.type == "numeric":
                i = self.numeric_fields.index(f.name)
                out[f.name] = batch[f.name].unsqueeze(-1).float() * self.numeric.weight[i]
            else:
                out[f.name] = self.tables[f.vocab](batch[f.name])
        return out

    def pooled(self, batch: dict[str, torch.Tensor], fields: list[str] | None = None) -> list[torch.Tensor]:
        """Each field's (B, d) vector in schema order (only `fields`, if given); sequences mean-pooled over
        their real events."""
        emb = self(batch, fields)
        return [masked_mean(v, batch[name] != 0) if v.dim() == 3 else v for name, v in emb.items()]


def masked_mean(seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid positions of (B, L, d); zeros for an empty sequence."""
    mask = mask.unsqueeze(-1).to(seq.dtype)
    return (seq * mask).sum(1) / mask.sum(1).clamp_min(1.0)
