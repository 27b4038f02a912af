"""Binary-code hash embedding (Yan et al., "Binary Code based Hash Embedding for Web-scale Applications",
CIKM'21): a table of any size below the vocabulary's, every id keeping a representation of its own.

Sourced [S: the paper's abstract and method]: an id is written as a binary code; the code is cut into blocks
of consecutive bits ("succession" blocking); each block's value indexes a small table; the id's embedding fuses
its blocks' vectors. Two ids share a vector only if every block agrees, i.e. never, so no two ids collapse as
they do in modulo hashing, and the table size is a free choice (the paper keeps 99% of the AUC at 1000x).
Inferred [I]: each block position has its own rows (block j's value v indexes row offset_j + v), the fusion
is the sum, and the blocks are t bits wide, t the widest whose table fits the requested compression, but for
the last, which holds the bits left over and gets only the rows they can reach.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from loopctr.data.schema import PAD


def block_widths(num_ids: int, compression: float, code_bits: int | None = None) -> list[int]:
    """The bits of each block, low bits first, for codes of `code_bits` bits (default: those of ids
    0..num_ids-1): blocks of t bits and a last one of the rest, t the widest for which the rows, sum of 2^width,
    are at most num_ids / compression (at least one bit: 2 rows a bit)."""
    bits = code_bits or max(1, math.ceil(math.log2(max(num_ids, 2))))
    budget = num_ids / compression
    for width in range(bits, 0, -1):
        widths = [width] * (bits // width) + ([bits % width] if bits % width else [])
        if sum(2 ** w for w in widths) <= budget or width == 1:
            return widths
    raise AssertionError("unreachable")


class BinaryCodeEmbedding(nn.Module):
    """ids (any shape, 0 <= id < 2^code_bits) -> (..., dim), in a table about `compression` times smaller than
    the `num_ids` rows of a full one; the padding id gives zeros, as nn.Embedding's padding_idx does. The ids
    are vocabulary indices (code_bits from num_ids) or the 31-bit token hashes of a hashed vocabulary."""

    def __init__(self, num_ids: int, dim: int, compression: float, code_bits: int | None = None):
        super().__init__()
        self.num_ids = num_ids
        self.widths = block_widths(num_ids, compression, code_bits)
        sizes = torch.tensor([2 ** w for w in self.widths])
        self.table = nn.Embedding(int(sizes.sum()), dim)
        self.register_buffer("shifts", torch.tensor([0, *self.widths[:-1]]).cumsum(0), persistent=False)
        self.register_buffer("masks", sizes - 1, persistent=False)
        self.register_buffer("offsets", sizes.cumsum(0) - sizes, persistent=False)

    @property
    def compression(self) -> float:
        """The achieved ratio of a full table's rows to this table's."""
        return self.num_ids / self.table.num_embeddings

    def reset_parameters(self, std: float) -> None:
        nn.init.normal_(self.table.weight, std=std / len(self.widths) ** 0.5)  # a sum of n rows: std as given

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The table rows of each id's blocks: (..., blocks)."""
        return ((ids.long().unsqueeze(-1) >> self.shifts) & self.masks) + self.offsets

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.table(self.rows(ids)).sum(-2)
        return vectors * (ids != PAD).unsqueeze(-1).to(vectors.dtype)
