"""Binary-code hash embedding (Yan et al., "Binary Code based Hash Embedding for Web-scale Applications",
CIKM'21): a table of any size below the vocabulary's, every id keeping a representation of its own.

Sourced [S: the paper's abstract and method]: an id is written as a binary code; the code is cut into blocks
of consecutive bits ("succession" blocking); each block's value indexes a small table; the id's embedding fuses
its blocks' vectors. Two ids share a vector only if every block agrees, i.e. never, so no two ids collapse as
they do in modulo hashing, and the table size is a free choice (the paper keeps 99% of the AUC at 1000x).
Inferred [I]: each block position has its own rows (block j's value v indexes row j * 2^t + v), the fusion
is the sum, and the block width t is the widest whose table fits the requested compression.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from loopctr.data.schema import PAD


def block_layout(num_ids: int, compression: float, code_bits: int | None = None) -> tuple[int, int]:
    """(bits per block t, blocks n) for codes of `code_bits` bits (default: those of ids 0..num_ids-1): the
    widest t whose n * 2^t rows are at most num_ids / compression (at least one bit, so at least 2 * bits rows)."""
    bits = code_bits or max(1, math.ceil(math.log2(max(num_ids, 2))))
    budget = num_ids / compression
    for width in range(bits, 0, -1):
        blocks = math.ceil(bits / width)
        if blocks * 2 ** width <= budget or width == 1:
            return width, blocks
    raise AssertionError("unreachable")


class BinaryCodeEmbedding(nn.Module):
    """ids (any shape, 0 <= id < 2^code_bits) -> (..., dim), in a table about `compression` times smaller than
    the `num_ids` rows of a full one; the padding id gives zeros, as nn.Embedding's padding_idx does. The ids
    are vocabulary indices (code_bits from num_ids) or the 31-bit token hashes of a hashed vocabulary."""

    def __init__(self, num_ids: int, dim: int, compression: float, code_bits: int | None = None):
        super().__init__()
        self.num_ids = num_ids
        self.width, self.blocks = block_layout(num_ids, compression, code_bits)
        self.table = nn.Embedding(self.blocks * 2 ** self.width, dim)
        shifts = torch.arange(self.blocks) * self.width
        self.register_buffer("shifts", shifts, persistent=False)
        self.register_buffer("offsets", torch.arange(self.blocks) * 2 ** self.width, persistent=False)

    @property
    def compression(self) -> float:
        """The achieved ratio of a full table's rows to this table's."""
        return self.num_ids / self.table.num_embeddings

    def reset_parameters(self, std: float) -> None:
        nn.init.normal_(self.table.weight, std=std / self.blocks ** 0.5)  # the sum of n rows has the given std

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The table rows of each id's blocks: (..., blocks)."""
        values = (ids.long().unsqueeze(-1) >> self.shifts) & (2 ** self.width - 1)
        return values + self.offsets

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.table(self.rows(ids)).sum(-2)
        return vectors * (ids != PAD).unsqueeze(-1).to(vectors.dtype)
