"""OneTrans (Zhang et al., ByteDance/NTU, arXiv 2510.26104, WWW'26): one Transformer over sequential (S) and
non-sequential (NS) tokens together. No official code; this follows the paper's description [S: reviews
cited in the reference notes, section 2.7].

- Unified tokenizer: every event's sequence fields (e.g. item + category history: the schema's first sequence
  group) are concatenated and projected by one shared Linear to an S-token; the NS features (every
  categorical/numeric field, and other sequence fields such as genres, mean-pooled) are concatenated and
  mapped by one Linear to `ns_tokens` NS-tokens ("auto-split").
- Tokens are [S-tokens (oldest to newest) | NS-tokens]; a causal mask lets each NS-token see the whole
  history and the NS-tokens before it; padding is never attended.
- Each block is pre-norm (RMSNorm): mixed causal attention, then a mixed FFN (SwiGLU). "Mixed": all
  S-tokens share one set of Q/K/V and FFN weights, every NS-token has its own (token-specific) weights.
- Pyramid stacking: layer l keeps only the newest L_max // 2^(l+1) S-tokens as queries (keys and values
  still cover all tokens of its input), and the last layer queries the NS-tokens alone: with L_max = 100 and
  6 layers the S part shrinks 100 -> 50 -> 25 -> 12 -> 6 -> 3 -> 0. The schedule counts from the schema's
  longest sequence, not from a batch's width, so results do not depend on padding.
- Read-out: the final NS-tokens, RMS-normalised and flattened, through an MLP head.
Inferred [I]: single Linears as the tokenizers, a shared output projection and RMSNorms, no position
embedding (order comes from the causal mask), the head (ReLU MLP [1024, 512, 256] with batch norm) and the
sizes (d_model 64, 4 NS-tokens, 2 layers, 4 heads, SwiGLU hidden 2 * d_model). Works without any sequence
(then it is a causal Transformer over the NS-tokens); needs at least one non-sequence field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from loopctr.errors import UserError
from loopctr.layers.tokenwise import TokenwiseLinear
from loopctr.layers.transformer import RMSNorm, SwiGLU, attention_mask
from loopctr.models.base import CTRModel, SequenceEncoderConfig
from loopctr.models.registry import register
from loopctr.models.target_sequence import in_length_groups, max_events


@dataclass
class OneTransConfig(SequenceEncoderConfig):
    model_dim: int = 64
    ns_tokens: int = 4
    num_layers: int = 2
    num_heads: int = 4
    ffn_multiplier: int = 2
    pyramid: bool = True
    attention_dropout: float = 0.0
    dropout: float = 0.1  # on the attention and FFN outputs

    def validate(self):
        super().validate()
        if min(self.model_dim, self.ns_tokens, self.num_layers, self.num_heads, self.ffn_multiplier) < 1:
            raise UserError("model.model_dim, ns_tokens, num_layers, num_heads and ffn_multiplier must be >= 1")
        if self.model_dim % self.num_heads:
            raise UserError(f"model.num_heads={self.num_heads} must divide model.model_dim={self.model_dim}")


class MixedLinear(nn.Module):
    """One Linear shared by the S-tokens, a token-specific one for each of the last `ns` (NS) tokens."""

    def __init__(self, ns: int, in_dim: int, out_dim: int, bias: bool = False):
        super().__init__()
        self.ns = ns
        self.shared = nn.Linear(in_dim, out_dim, bias=bias)
        self.specific = TokenwiseLinear(ns, in_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.shared(x[:, :-self.ns]), self.specific(x[:, -self.ns:])], dim=1)


class OneTransBlock(nn.Module):
    def __init__(self, c: OneTransConfig):
        super().__init__()
        d, t, hidden = c.model_dim, c.ns_tokens, c.ffn_multiplier * c.model_dim
        self.h, self.t, self.dropout_p = c.num_heads, t, c.attention_dropout
        self.norm_attn, self.norm_ffn = RMSNorm(d), RMSNorm(d)
        self.qkv = MixedLinear(t, d, 3 * d)
        self.out = nn.Linear(d, d, bias=False)
        self.ffn_s = SwiGLU(d, hidden)
        self.ffn_ns_in = TokenwiseLinear(t, d, 2 * hidden, bias=False)
        self.ffn_ns_out = TokenwiseLinear(t, hidden, d, bias=False)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, n_s + T, d) -> the newest `keep` S-tokens (all n_s when fewer) and the T NS-tokens, with their
        token mask. Every slice counts from the end, so `keep` need not know n_s: an export follows any width."""
        b, _, d = x.shape
        query = slice(-(keep + self.t), None)
        heads = lambda z: z.view(b, z.shape[1], self.h, d // self.h).transpose(1, 2)  # noqa: E731
        q, k, v = self.qkv(self.norm_attn(x)).chunk(3, dim=-1)
        mask = attention_mask(token_mask, "causal", query=query)
        y = F.scaled_dot_product_attention(heads(q[:, query]), heads(k), heads(v), attn_mask=mask,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        x = x[:, query] + self.dropout(self.out(y.transpose(1, 2).reshape(b, y.shape[2], d)))
        token_mask = token_mask[:, query]
        h = self.norm_ffn(x)
        ns = h[:, -self.t:]
        gate, up = self.ffn_ns_in(ns).chunk(2, dim=-1)
        ffn_ns = self.ffn_ns_out(F.silu(gate) * up)
        ffn_s = self.ffn_s(h[:, :-self.t])
        return x + self.dropout(torch.cat([ffn_s, ffn_ns], dim=1)), token_mask


@register("onetrans")
class OneTrans(CTRModel):
    config_class = OneTransConfig

    def __init__(self, schema, vocab_sizes, config: OneTransConfig):
        super().__init__(schema, vocab_sizes, config)
        c, d = config, config.embedding_dim
        groups = schema.sequence_groups()
        self.sequences = groups[0] if groups else []  # the S-tokens' events
        self.non_sequence = [f.name for f in schema.fields if f.name not in self.sequences]
        if not self.non_sequence:
            raise UserError(f"OneTrans needs at least one non-sequence field; dataset '{schema.name}' has none")
        self.s_tokenizer = nn.Linear(d * len(self.sequences), c.model_dim) if self.sequences else None
        self.ns_tokenizer = nn.Linear(d * len(self.non_sequence), c.ns_tokens * c.model_dim)
        self.blocks = nn.ModuleList(OneTransBlock(c) for _ in range(c.num_layers))
        self.max_events = max_events(schema)
        self.norm = RMSNorm(c.model_dim)
        self.head = self.mlp_head(c.ns_tokens * c.model_dim)

    def schedule(self) -> list[int]:
        """How many of the newest S-tokens each layer keeps as queries (and outputs); a layer keeps all of a
        batch's S-tokens when it has fewer. Fixed by the schema's longest history, not by the batch."""
        layers = len(self.blocks)
        if not self.config.pyramid:
            return [self.max_events] * (layers - 1) + [0]
        return [self.max_events // 2 ** (i + 1) for i in range(layers - 1)] + [0]

    def encode(self, events: torch.Tensor | None, mask: torch.Tensor | None, ns: torch.Tensor) -> torch.Tensor:
        """S-tokens (b, L, d_model) with their mask (or None: no sequence) and NS-tokens (b, T, d_model) -> the
        final NS-tokens, normalised and flattened (b, T * d_model)."""
        token_mask = ns.new_ones(ns.shape[:2], dtype=torch.bool)
        x = ns
        if events is not None:
            x = torch.cat([events, ns], dim=1)
            token_mask = torch.cat([mask, token_mask], dim=1)
        for block, keep in zip(self.blocks, self.schedule()):
            x, token_mask = block(x, token_mask, keep)
        return self.norm(x).flatten(1)

    def forward(self, batch):
        c = self.config
        ns = self.ns_tokenizer(torch.cat(self.embedding.pooled(batch, self.non_sequence), dim=-1))
        ns = ns.view(batch.size, c.ns_tokens, c.model_dim)
        if self.s_tokenizer is None:
            out = self.encode(None, None, ns)
        else:
            emb = self.embedding(batch, self.sequences)
            s_tokens = self.s_tokenizer(torch.cat([emb[f] for f in self.sequences], dim=-1))  # (T, d_model)
            out = in_length_groups(self.encode, batch.jagged(self.sequences[0]), s_tokens, c.length_chunks, ns)
        return {"logits": self.head(out, self.apg_condition(batch)).squeeze(-1)}
