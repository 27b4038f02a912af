"""DCNv2 (Wang et al., "DCN V2", WWW'21), as FuxiCTR defines it (model_zoo/DCNv2, layers/cross_net.py).

x0 is the concatenation of every field's embedding (sequences mean-pooled over valid events, FuxiCTR's
MaskedAveragePooling). The cross network applies x_{l+1} = x0 * (W_l x_l + b_l) + x_l (or the low-rank
mixture of experts, `use_low_rank_mixture`). Structures: `crossnet_only` (Linear on the cross output),
`stacked` (cross -> DNN), `parallel` (Linear on concat(cross, DNN(x0))) and `stacked_parallel`
(concat(DNN_s(cross), DNN_p(x0))). Defaults are the BARS AmazonElectronics_x1 settings (2 cross layers,
parallel, DNN [1024, 512, 256], ReLU, batch norm, no dropout). Nothing here is inferred; it needs no sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from loopctr.errors import UserError
from loopctr.layers.interaction import CrossNetMix, CrossNetV2
from loopctr.layers.mlp import MLP
from loopctr.models.base import APGConfig, CTRModel
from loopctr.models.registry import register

STRUCTURES = ("crossnet_only", "stacked", "parallel", "stacked_parallel")


@dataclass
class DCNv2Config(APGConfig):
    model_structure: str = "parallel"
    num_cross_layers: int = 2
    use_low_rank_mixture: bool = False
    low_rank: int = 32
    num_experts: int = 4
    stacked_dnn_hidden_units: list[int] = field(default_factory=lambda: [500, 500, 500])
    parallel_dnn_hidden_units: list[int] = field(default_factory=lambda: [1024, 512, 256])
    dnn_activation: str = "relu"
    dnn_dropout: float = 0.0
    batch_norm: bool = True

    def validate(self):
        super().validate()
        if self.model_structure not in STRUCTURES:
            raise UserError(f"model.model_structure '{self.model_structure}' is not one of {list(STRUCTURES)}")
        if self.num_cross_layers < 1 or self.low_rank < 1 or self.num_experts < 1:
            raise UserError("model.num_cross_layers, model.low_rank and model.num_experts must be >= 1")
        if "stacked" in self.model_structure and not self.stacked_dnn_hidden_units:
            raise UserError(f"model.model_structure={self.model_structure} needs model.stacked_dnn_hidden_units")
        if "parallel" in self.model_structure and not self.parallel_dnn_hidden_units:
            raise UserError(f"model.model_structure={self.model_structure} needs model.parallel_dnn_hidden_units")


@register("dcnv2")
class DCNv2(CTRModel):
    config_class = DCNv2Config

    def __init__(self, schema, vocab_sizes, config: DCNv2Config):
        super().__init__(schema, vocab_sizes, config)
        c = config
        dim = c.embedding_dim * len(schema.fields)
        self.crossnet = (CrossNetMix(dim, c.num_cross_layers, c.low_rank, c.num_experts) if c.use_low_rank_mixture
                         else CrossNetV2(dim, c.num_cross_layers))
        dnn = lambda units: MLP(dim, units, c.dnn_activation, c.dnn_dropout, c.batch_norm, apg=self.apg)  # noqa: E731
        self.stacked_dnn = dnn(c.stacked_dnn_hidden_units) if "stacked" in c.model_structure else None
        self.parallel_dnn = dnn(c.parallel_dnn_hidden_units) if "parallel" in c.model_structure else None
        final = (self.stacked_dnn.output_dim if self.stacked_dnn is not None else dim) + \
            (self.parallel_dnn.output_dim if self.parallel_dnn is not None else 0)
        self.fc = nn.Linear(final, 1)

    def forward(self, batch):
        x0 = torch.cat(self.embedding.pooled(batch), dim=-1)
        fields = self.apg_condition(batch)
        cross = self.crossnet(x0)
        structure = self.config.model_structure
        if structure == "crossnet_only":
            out = cross
        elif structure == "stacked":
            out = self.stacked_dnn(cross, fields)
        elif structure == "parallel":
            out = torch.cat([cross, self.parallel_dnn(x0, fields)], dim=-1)
        else:
            out = torch.cat([self.stacked_dnn(cross, fields), self.parallel_dnn(x0, fields)], dim=-1)
        return {"logits": self.fc(out).squeeze(-1)}
