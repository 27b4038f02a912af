"""DNN (FuxiCTR's DNN): every field embedded, sequences mean-pooled over valid events, concatenated, MLP."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from loopctr.layers.mlp import MLP
from loopctr.models.base import APGConfig, CTRModel
from loopctr.models.registry import register


@dataclass
class DNNConfig(APGConfig):
    hidden_units: list[int] = field(default_factory=lambda: [1024, 512, 256])
    activation: str = "dice"
    dropout: float = 0.1
    batch_norm: bool = True


@register("dnn")
class DNN(CTRModel):
    config_class = DNNConfig

    def __init__(self, schema, vocab_sizes, config: DNNConfig):
        super().__init__(schema, vocab_sizes, config)
        d = config.embedding_dim * len(schema.fields)
        self.mlp = MLP(d, config.hidden_units, config.activation, config.dropout, config.batch_norm, output_dim=1,
                       apg=self.apg)

    def forward(self, batch):
        x = torch.cat(self.embedding.pooled(batch), dim=-1)
        return {"logits": self.mlp(x, self.apg_condition(batch)).squeeze(-1)}
