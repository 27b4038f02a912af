"""DLRM (Naumov et al., 2019), as FuxiCTR defines it (model_zoo/DLRM).

Numeric fields go through a bottom MLP (hidden units, then a Linear to embedding_dim, the activation also at
its output) into one more vector; categorical fields are embedded and sequence fields mean-pooled over valid
events (FuxiCTR's MaskedAveragePooling in the BARS feature configs). Interaction `dot`: the n(n-1)/2
pairwise inner products of the n vectors, concatenated with the bottom-MLP output when there is one;
`cat`: the flattened vectors. A top MLP gives the logit. Works with no numeric field (then there is no
bottom MLP). Defaults are FuxiCTR's ([64, 64, 64] MLPs, ReLU, no batch norm); BARS has no DLRM run on
these datasets, so there are no tuned settings to copy. Note: with `dot` the top MLP sees only the inner
products (and the dense vector), as in the paper, not the embeddings themselves.
Embedding initialisation: `embedding_init=dlrm` (default) is the reference DLRM's U(-1/sqrt(n), 1/sqrt(n))
for an n-row table [S: facebookresearch/dlrm, dlrm_s_pytorch.py create_emb]; `fuxictr` keeps the N(0, 1e-4)
of the other models here. With that tiny init every inner product starts near 1e-8 and, on Amazon Beauty with
the BARS embedding L2 of 0.005, DLRM stayed at AUC 0.5 for a whole epoch (measured), so the default differs.
Even so, the dot interaction's gradient to an embedding is proportional to the other embeddings, so zero is a
stable point that a coupled L2 under Adam can drive every table to: on Amazon Sports (larger tables, so a smaller
uniform init) 2 of 3 seeds predicted a constant at the BARS L2 and trained normally at 5e-4 (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from loopctr.data.schema import PAD
from loopctr.errors import UserError
from loopctr.layers.interaction import dot_interaction
from loopctr.layers.mlp import MLP, activation
from loopctr.models.base import CTRModel, ModelConfig
from loopctr.models.registry import register


@dataclass
class DLRMConfig(ModelConfig):
    bottom_mlp_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    top_mlp_units: list[int] = field(default_factory=lambda: [64, 64, 64])
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    interaction_op: str = "dot"  # dot | cat
    embedding_init: str = "dlrm"  # dlrm: U(-1/sqrt(rows), 1/sqrt(rows)) per table; fuxictr: N(0, 1e-4)

    def validate(self):
        super().validate()
        if self.interaction_op not in ("dot", "cat"):
            raise UserError(f"model.interaction_op '{self.interaction_op}' is not one of ['dot', 'cat']")
        if self.embedding_init not in ("dlrm", "fuxictr"):
            raise UserError(f"model.embedding_init '{self.embedding_init}' is not one of ['dlrm', 'fuxictr']")


@register("dlrm")
class DLRM(CTRModel):
    config_class = DLRMConfig

    def __init__(self, schema, vocab_sizes, config: DLRMConfig):
        super().__init__(schema, vocab_sizes, config)
        c, d = config, config.embedding_dim
        self.numeric = [f.name for f in schema.of_type("numeric")]
        self.sparse = [f.name for f in schema.fields if f.type != "numeric"]
        self.embedding.numeric = None  # numeric fields go through the bottom MLP, not the value-times-vector embedding
        self.bottom = None
        if self.numeric:
            self.bottom = nn.Sequential(MLP(len(self.numeric), c.bottom_mlp_units, c.activation, c.dropout,
                                            c.batch_norm, output_dim=d), activation(c.activation, d))
        self.num_vectors = len(self.sparse) + int(bool(self.numeric))
        if c.interaction_op == "dot":
            if self.num_vectors < 2:
                raise UserError("DLRM's dot interaction needs at least two fields")
            top_in = self.num_vectors * (self.num_vectors - 1) // 2 + (d if self.numeric else 0)
        else:
            top_in = self.num_vectors * d
        self.top = MLP(top_in, c.top_mlp_units, c.activation, c.dropout, c.batch_norm, output_dim=1)

    def reset_parameters(self):
        super().reset_parameters()
        if self.config.embedding_init == "dlrm":
            with torch.no_grad():
                for table in self.embedding.id_tables():
                    bound = table.weight.shape[0] ** -0.5
                    table.weight.uniform_(-bound, bound)
                    table.weight[PAD].zero_()

    def forward(self, batch):
        vectors = self.embedding.pooled(batch, self.sparse)
        dense = None
        if self.bottom is not None:
            values = self.embedding.numeric_values(batch)
            dense = self.bottom(torch.stack([values[f] for f in self.numeric], dim=-1))
            vectors.append(dense)
        stacked = torch.stack(vectors, dim=1)  # (B, n, d)
        if self.config.interaction_op == "dot":
            x = dot_interaction(stacked)
            if dense is not None:
                x = torch.cat([x, dense], dim=-1)
        else:
            x = stacked.flatten(1)
        return {"logits": self.top(x).squeeze(-1)}
