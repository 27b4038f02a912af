"""Wukong (Zhang et al., Meta, "Wukong: Towards a Scaling Law for Large-Scale Recommendation", ICML'24).

Every field is one d-wide token (categorical embeddings, numeric value-times-vector embeddings, sequences
mean-pooled over valid events). Stacked Wukong layers X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + res(X_i)):
the FMB is the paper's optimised FM X (X^T Y) with a learned rank-k projection Y, flattened, LayerNorm'd and
passed through an MLP to n_F tokens; the LCB is a bias-free linear map over the token axis to n_L tokens;
res is the identity, or a linear map over the token axis when the token count changes. The last layer's
tokens are flattened into an MLP head. This follows the paper's equations (as does clabrugere's
unofficial PyTorch port) rather than FuxiCTR's WuKong, whose LCB and FMB output flat vectors that are
projected back to n*d.
Inferred [I]: the sizes (3 layers, n_F = n_L = 8, rank 8, FMB MLP [256, 256]: the paper's public-dataset
settings could not be read), no activation on the FMB output, and the head (ReLU MLP [1024, 512, 256] with
batch norm, as the other baselines here, for comparability). Needs no sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from loopctr.errors import UserError
from loopctr.layers.interaction import WukongLayer
from loopctr.models.base import CTRModel, MLPHeadConfig
from loopctr.models.registry import register


@dataclass
class WukongConfig(MLPHeadConfig):
    num_layers: int = 3
    fmb_tokens: int = 8
    lcb_tokens: int = 8
    fmb_rank: int = 8
    fmb_hidden_units: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    dropout: float = 0.0  # inside the FMB MLPs

    def validate(self):
        super().validate()
        if min(self.num_layers, self.fmb_tokens, self.fmb_rank) < 1 or self.lcb_tokens < 0:
            raise UserError("model.num_layers, model.fmb_tokens and model.fmb_rank must be >= 1, lcb_tokens >= 0")


@register("wukong")
class Wukong(CTRModel):
    config_class = WukongConfig

    def __init__(self, schema, vocab_sizes, config: WukongConfig):
        super().__init__(schema, vocab_sizes, config)
        c, d = config, config.embedding_dim
        layers, num_in = [], len(schema.fields)
        for _ in range(c.num_layers):
            layers.append(WukongLayer(num_in, d, c.fmb_tokens, c.lcb_tokens, c.fmb_rank, c.fmb_hidden_units,
                                      c.activation, c.dropout))
            num_in = c.fmb_tokens + c.lcb_tokens
        self.layers = nn.Sequential(*layers)
        self.head = self.mlp_head(num_in * d)

    def forward(self, batch):
        x = self.layers(torch.stack(self.embedding.pooled(batch), dim=1))
        return {"logits": self.head(x.flatten(1), self.apg_condition(batch)).squeeze(-1)}
