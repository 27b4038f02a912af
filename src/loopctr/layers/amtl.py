"""AMTL: a per-value embedding size, learned from each value's frequency by an adaptively-masked twins layer.

Sourced (Yan et al., CIKM'21, "Learning Effective and Efficient Embedding via an Adaptively-Masked Twins-based
Layer", abstract): one fixed embedding size per field is sub-optimal and memory-costly; AMTL is a layer behind
the standard embedding layer that generates, for every embedding vector, a mask vector that masks the undesired
dimensions; it can be added to an untrained or a trained model; 60% memory saved without loss.

Recalled from the paper and inferred (marked [I]; each is a setting or a plain choice):
- the mask is a prefix: a value keeps its first k of d dimensions, k chosen per value from its statistics;
- the statistics are the value's training frequency ([I] two inputs: log(1 + count) / log(1 + max count), and
  whether the value never occurred in training), so the mask depends on the value only and is fixed at serving;
- twins: two MLPs over the statistics, one meant for frequent values and one for rare ones, mixed by the value's
  normalised log-frequency a: logits = a h(x) + (1 - a) l(x) over the d sizes (so that the many updates of
  frequent values do not decide the sizes of rare ones);
- [I] training: p = softmax(logits / temperature); the forward uses the hard prefix mask of the most likely size,
  the backward the soft mask m_j = P(k > j) (straight-through), so the sizes get gradients from the task loss;
- [I] `size_penalty` x the mean expected kept fraction of the batch's values is added to the loss: without some
  price on dimensions nothing pushes the sizes below d.
Serving: `truncate()` keeps only each value's first k dimensions, back to back (`values`, `offsets`), and
embeds from them, so an exported program stores the truncated vectors (`loopctr export`), and scores as the
masked table does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from loopctr.data.schema import PAD


class AMTLEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, hidden: int = 32, temperature: float = 1.0):
        super().__init__()
        self.num_embeddings, self.dim, self.temperature = num_embeddings, dim, temperature
        self.table = nn.Embedding(num_embeddings, dim, padding_idx=PAD)  # an embedding table to the optimiser
        self.register_buffer("frequency", torch.zeros(num_embeddings))  # training counts (set_frequency)
        self.high = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.low = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.truncated = False
        self.kept_fractions: list[torch.Tensor] = []  # each training lookup's mean expected kept fraction

    def reset_parameters(self, std: float) -> None:
        nn.init.normal_(self.table.weight, std=std)
        with torch.no_grad():
            self.table.weight[PAD].zero_()
        for twin in (self.high, self.low):
            for layer in twin:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_normal_(layer.weight)
                    nn.init.zeros_(layer.bias)
            with torch.no_grad():  # start at full size (P about 1 - 1/d): the task decides what to drop
                twin[-1].bias[-1] = 2 * math.log(self.dim)

    def set_frequency(self, counts) -> None:
        with torch.no_grad():
            self.frequency.copy_(torch.as_tensor(counts, dtype=torch.float32))

    def size_probabilities(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., d): P(size = j + 1) of every id."""
        f = self.frequency[ids]
        share = torch.log1p(f) / math.log1p(max(float(self.frequency.max()), 1.0))
        x = torch.stack([share, (f == 0).to(share.dtype)], dim=-1)
        a = share.unsqueeze(-1)
        logits = a * self.high(x) + (1 - a) * self.low(x)
        return F.softmax(logits / self.temperature, dim=-1)

    def sizes(self) -> torch.Tensor:
        """(V,) every value's kept dimensions (the most likely size; 0 for padding)."""
        ids = torch.arange(self.num_embeddings, device=self.frequency.device)
        k = self.size_probabilities(ids).argmax(-1) + 1
        return k.masked_fill(ids == PAD, 0)

    def mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., d) prefix masks: hard forward; in training the soft mask's gradient (straight-through). A mask
        depends on the value alone, so the twins run once per distinct value of the batch, not once per lookup."""
        values, inverse = torch.unique(ids, return_inverse=True)
        p = self.size_probabilities(values)
        positions = torch.arange(self.dim, device=ids.device)
        hard = (positions < (p.argmax(-1, keepdim=True) + 1)).to(p.dtype)[inverse]
        if not self.training:
            return hard
        soft = p.flip(-1).cumsum(-1).flip(-1)[inverse]  # m_j = P(size > j) = sum_{k >= j} p_k (0-based j)
        self.kept_fractions.append(soft.mean())
        return hard + soft - soft.detach()

    def truncate(self) -> None:
        """Keep only each value's first `sizes()` dimensions (serving); the full table is dropped."""
        with torch.no_grad():
            sizes = self.sizes()
            keep = torch.arange(self.dim, device=sizes.device) < sizes.unsqueeze(1)
            values = self.table.weight[keep]
        del self.table, self.high, self.low
        self.register_buffer("values", values)
        # value i's vector is values[offsets[i]:offsets[i + 1]] (int32: 4 bytes a value beside its floats)
        self.register_buffer("offsets", torch.cat([sizes.new_zeros(1), sizes.cumsum(0)]).int())
        self.last_index = int(values.shape[0]) - 1  # (every value but padding keeps a dimension: never -1)
        self.truncated = True

    def table_bytes(self) -> int:
        """Bytes of the vectors as stored: the full table, or after `truncate` only the kept dimensions (plus
        an offset per value)."""
        if self.truncated:
            return self.values.numel() * self.values.element_size() + self.offsets.numel() * 4
        return self.table.weight.numel() * self.table.weight.element_size()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.truncated:
            positions = torch.arange(self.dim, device=ids.device)
            start, end = self.offsets[ids].long(), self.offsets[ids + 1].long()
            keep = positions < (end - start).unsqueeze(-1)
            index = (start.unsqueeze(-1) + positions).clamp_max(self.last_index)  # positions past a row: masked
            gathered = self.values[index]
            return gathered * keep.to(gathered.dtype)
        return self.table(ids) * self.mask(ids)
