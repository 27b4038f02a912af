"""DIN (Zhou et al., KDD'18), as FuxiCTR defines it.

Target fields and their sequences are paired through shared vocabularies (item_id with item_history,
cate_id with cate_history); the target's concatenated embeddings attend over the concatenated event
embeddings, the attended vector replaces the sequence fields, other sequence fields (bags such as genres) are
mean-pooled, and an MLP over all fields gives the logit. Defaults are the BARS AmazonElectronics_x1 settings.
`model.content_interest=true` adds the content interest of layers/content_interest.py to the MLP's input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from loopctr.layers.attention import DINAttention
from loopctr.layers.embedding import pool_sequences
from loopctr.models.base import ContentConfig, CTRModel, MLPHeadConfig
from loopctr.models.registry import register
from loopctr.models.target_sequence import require_pairs, target_and_history


@dataclass
class DINConfig(MLPHeadConfig, ContentConfig):
    attention_hidden_units: list[int] = field(default_factory=lambda: [512, 256])
    attention_activation: str = "dice"
    attention_dropout: float = 0.1
    use_softmax: bool = True
    dnn_activation: str = "dice"


@register("din")
class DIN(CTRModel):
    config_class = DINConfig

    def __init__(self, schema, vocab_sizes, config: DINConfig):
        super().__init__(schema, vocab_sizes, config)
        self.pairs = require_pairs(schema, "DIN")
        d = config.embedding_dim
        self.attention = DINAttention(d * len(self.pairs), config.attention_hidden_units, config.attention_activation,
                                      config.attention_dropout, config.use_softmax)
        self.content = self.content_interest(d * len(self.pairs))
        self.mlp = self.mlp_head(d * len(schema.fields) + (self.content.out_dim if self.content else 0))

    def reset_parameters(self):
        super().reset_parameters()
        if self.content is not None:  # it joins the embeddings in the MLP's input: start at their scale
            self.content.reset_parameters(self.embedding.init_std)

    def forward(self, batch):
        emb = self.embedding(batch)
        target, history, events = target_and_history(emb, batch, self.pairs)
        attended = self.attention(target, events, history).split(self.config.embedding_dim, dim=-1)
        vectors = dict(zip((s for _, s in self.pairs), attended))  # the attended history replaces its fields
        rest = {k: v for k, v in emb.items() if k not in vectors}
        vectors.update(zip(rest, pool_sequences(rest, batch)))  # sequences without a target (e.g. genres) pooled
        parts = [vectors[f.name] for f in self.schema.fields]
        if self.content is not None:
            parts.append(self.content(batch, events))
        x = torch.cat(parts, dim=-1)
        return {"logits": self.mlp(x, self.apg_condition(batch)).squeeze(-1)}
