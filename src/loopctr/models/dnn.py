"""DNN (FuxiCTR's DNN): every field embedded, sequences mean-pooled over valid events, concatenated, MLP."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from loopctr.layers.embedding import masked_mean
from loopctr.layers.mlp import MLP
from loopctr.models import register
from loopctr.models.base import CTRModel, ModelConfig


@dataclass
class DNNConfig(ModelConfig):
    hidden_units: list[int] = field(default_factory=lambda: [1024, 512, 256])
    activation: str = "dice"
    dropout: float = 0.1
    batch_norm: bool = True


def pooled_fields(model: CTRModel, batch) -> list[torch.Tensor]:
    """Each field's (B, d) vector in schema order; sequences mean-pooled over valid events."""
    emb = model.embedding(batch)
    return [masked_mean(emb[f.name], model.sequence_mask(batch, f.name)) if f.type == "sequence" else emb[f.name]
            for f in model.schema.fields]


@register("dnn")
class DNN(CTRModel):
    config_class = DNNConfig

    def __init__(self, schema, vocab_sizes, config: DNNConfig):
        super().__init__(schema, vocab_sizes, config)
        d = config.embedding_dim * len(schema.fields)
        self.mlp = MLP(d, config.hidden_units, config.activation, config.dropout, config.batch_norm, output_dim=1)

    def forward(self, batch):
        return {"logits": self.mlp(torch.cat(pooled_fields(self, batch), dim=-1)).squeeze(-1)}
