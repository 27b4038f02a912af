"""LightSUAN (Lai et al., RecSys'25, arXiv 2508.15326): SUAN at a lower grade, with sparse self-attention, meant
to be trained by online distillation from a higher-grade SUAN (`distill.teacher=suan`, see train/distill.py).

Sourced [S: the paper's abstract and summaries]: "sparse self-attention (local + dilated patterns)" and a low
grade; the released code has no LightSUAN. Inferred [I]: the pattern, token i attending to tokens i-o for
o < window and for every multiple o of `dilation` (layers/sparse_attention.py), with the defaults below (one
block; window 8 and dilation 4, about 19 keys per token at max_len 50 instead of 51); everything else is
SUAN's UAB unchanged. With window >= the token count it is SUAN with `num_layers` blocks. The paper's
"parallel inference" (scoring many candidates of one user at once) is a serving strategy, not built here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from loopctr.errors import UserError
from loopctr.layers.sparse_attention import LocalDilatedAttention, sparse_pattern
from loopctr.models.registry import register
from loopctr.models.suan import SUAN, SUANConfig


@dataclass
class LightSUANConfig(SUANConfig):
    num_layers: int = 1
    window: int = 8  # a token sees the window - 1 tokens just before it ...
    dilation: int = 4  # ... and every dilation-th one further back (0: none)

    def validate(self):
        super().validate()
        if self.window < 1 or self.dilation < 0:
            raise UserError("model.window must be >= 1 and model.dilation >= 0")


@register("lightsuan")
class LightSUAN(SUAN):
    config_class = LightSUANConfig

    def new_self_attention(self) -> nn.Module:
        return LocalDilatedAttention(self.dim, self.config.num_heads)

    def attention_pattern(self, token_mask):
        return sparse_pattern(token_mask, self.config.window, self.config.dilation, self.rab)
