"""Explicit cross features from a pre-trained graph network over feature values (PCF-GNN-style).

Sourced (PCF-GNN, Li et al., SIGIR 2021, arXiv 2105.07752, abstract and introduction): statistical explicit
cross features, such as the click-through rate of a pair of feature values, are strong signals, but a table of
them generalises to no unseen pair and grows with the product of the vocabularies. PCF-GNN makes feature values
the nodes of a heterogeneous graph whose edges are the pairs seen together, carrying the pair's statistic as the
edge's attribute; a GNN is pre-trained to predict the attribute from the two nodes, and its prediction for any
pair, seen or not, is fed to the CTR model as an explicit cross feature; only node representations are stored.

Inferred here (the equations are not in the reference):
- the edge attribute is the log-odds of the pair's smoothed CTR, (clicks + m p) / (impressions + m) with the
  global rate p, relative to logit(p): 0 for a pair like the average; the loss is the squared error weighted by
  log(1 + impressions) (a statistic of many impressions is more reliable, without letting frequent pairs drown
  the rest);
- one GraphSAGE-style mean aggregation per edge type and direction, messages carry neighbour embeddings only
  (an edge's own attribute never reaches the nodes that predict it), and held-out edges are left out of the graph;
- the decoder is a biased inner product of per-pair projections, so that what is stored is one (vocab, dim + 1)
  matrix per side of each pair and a cross feature costs one dot product at serving time (`cross_logit`).
`train/pretrain_cross.py` pre-trains `CrossGNN` on the train split and writes the matrices; `PairCrossFeatures`
holds them frozen inside a CTR model, which reads each pair's value as a numeric field. In training, a row's value
comes from the network pre-trained without the rows of its fold (`row_fold`), so that it never saw the row's label.
"""

from __future__ import annotations

import torch
from torch import nn

from loopctr.data.batch import Batch
from loopctr.data.schema import parse_pair


CROSS_FOLDS = 5  # out-of-fold networks of every pair, for the features of training rows
_PRIME = 2_147_483_647  # 2^31 - 1: products of ids (< 2^31) and the multipliers below stay inside int64


def row_fold(ids: list[torch.Tensor]) -> torch.Tensor:
    """The fold (0 .. CROSS_FOLDS - 1) of each row: a hash of its ids in every categorical field (in schema
    order), the same in pre-training and in the model; rows alike in all of them share a fold."""
    mixed = torch.full_like(ids[0], 7, dtype=torch.long)
    for column in ids:
        mixed = (mixed + column.long()) * 48_271 % _PRIME
    return mixed * 48_271 % _PRIME % CROSS_FOLDS


def cross_logit(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """(..., dim + 1) projected vectors of the two values of a pair (the last column a bias) -> (...,) the
    predicted log-odds of their CTR relative to the global rate."""
    return (left[..., :-1] * right[..., :-1]).sum(-1) + left[..., -1] + right[..., -1]


class CrossGNN(nn.Module):
    """Node embeddings per vocabulary, `layers` rounds of mean aggregation over the graph's edge types, and per
    pair and side a Linear to the decoder's (dim + 1) vectors.

    `pairs`: (name, left vocabulary, right vocabulary); `edges[name]`: (left ids, right ids) of the graph's
    edges of that type (long tensors of equal length)."""

    def __init__(self, vocab_sizes: dict[str, int], pairs: list[tuple[str, str, str]], dim: int, layers: int):
        super().__init__()
        self.pairs = pairs
        self.embedding = nn.ModuleDict({v: nn.Embedding(n, dim) for v, n in vocab_sizes.items()})
        # one weight per edge type, direction and round: the message from the right values to the left and back
        self.messages = nn.ModuleList(
            nn.ModuleDict({f"{name}>{side}": nn.Linear(dim, dim, bias=False)
                           for name, _, _ in pairs for side in ("left", "right")})
            for _ in range(layers))
        self.heads = nn.ModuleDict({f"{name}>{side}": nn.Linear(dim, dim + 1)
                                    for name, _, _ in pairs for side in ("left", "right")})
        for table in self.embedding.values():
            nn.init.normal_(table.weight, std=0.1)
        # every pair starts at 0, the table's answer for an unseen pair: zero biases and right sides (the left's
        # vector part stays random, or no gradient would reach either side of the product)
        for name, head in self.heads.items():
            with torch.no_grad():
                head.bias.zero_()
                (head.weight if name.endswith(">right") else head.weight[-1:]).zero_()

    def node_states(self, edges: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """vocabulary -> (vocab size, dim) node representations after message passing over `edges`."""
        h = {v: table.weight for v, table in self.embedding.items()}
        for weights in self.messages:
            update = {v: x.clone() for v, x in h.items()}
            for name, left_vocab, right_vocab in self.pairs:
                left, right = edges[name]
                for side, (to, to_vocab, source, source_vocab) in {
                        "left": (left, left_vocab, right, right_vocab),
                        "right": (right, right_vocab, left, left_vocab)}.items():
                    total = torch.zeros_like(h[to_vocab]).index_add_(0, to, h[source_vocab][source])
                    degree = torch.zeros(h[to_vocab].shape[0], device=total.device).index_add_(
                        0, to, torch.ones_like(to, dtype=total.dtype))
                    update[to_vocab] = update[to_vocab] + weights[f"{name}>{side}"](
                        total / degree.clamp_min(1.0).unsqueeze(-1))
            h = {v: torch.tanh(x) for v, x in update.items()}
        return h

    def projections(self, states: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """pair name -> its (left vocab, dim + 1) and (right vocab, dim + 1) decoder matrices."""
        return {name: (self.heads[f"{name}>left"](states[lv]), self.heads[f"{name}>right"](states[rv]))
                for name, lv, rv in self.pairs}


class PairCrossFeatures(nn.Module):
    """The frozen decoder matrices of pre-trained field pairs (buffers: saved with the weights, exported and
    served, never trained); `forward(batch)` -> pair name -> (B,) cross feature of each row's two values: in
    training from the matrices of the row's out-of-fold network, otherwise from those of the network of all pairs."""

    def __init__(self, pairs: list[str], fold_fields: list[str]):
        super().__init__()
        self.pairs = {name: parse_pair(name) for name in pairs}
        self.fold_fields = fold_fields  # the categorical fields whose ids hash to a row's fold

    SIDES = ("left", "right", "left_folds", "right_folds")

    def attach(self, name: str, left_shape: tuple[int, int], right_shape: tuple[int, int]) -> None:
        """Zero matrices of these shapes, and of the folds' (filled by `load` or a checkpoint)."""
        for side, shape in (("left", left_shape), ("right", right_shape)):
            self.register_buffer(self._buffer(name, side), torch.zeros(shape))
            self.register_buffer(self._buffer(name, f"{side}_folds"), torch.zeros(CROSS_FOLDS, *shape))

    def load(self, name: str, matrices: dict) -> None:
        """`matrices`: side (`SIDES`) -> array."""
        with torch.no_grad():
            for side in self.SIDES:
                getattr(self, self._buffer(name, side)).copy_(torch.as_tensor(matrices[side]))

    @staticmethod
    def _buffer(name: str, side: str) -> str:
        return f"{name.replace(':', '_x_')}_{side}"

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = {}
        fold = row_fold([batch.features[f] for f in self.fold_fields]) if self.training else None
        for name, (left, right) in self.pairs.items():
            ids = batch.features[left], batch.features[right]
            if self.training:
                a = getattr(self, self._buffer(name, "left_folds"))[fold, ids[0]]
                b = getattr(self, self._buffer(name, "right_folds"))[fold, ids[1]]
            else:
                a = getattr(self, self._buffer(name, "left"))[ids[0]]
                b = getattr(self, self._buffer(name, "right"))[ids[1]]
            out[name] = cross_logit(a, b)
        return out
