"""Feature embeddings: one table per vocabulary, so fields that share a vocabulary share their embeddings."""

from __future__ import annotations

import torch
from torch import nn

from loopctr.data.batch import Batch
from loopctr.data.schema import HASH_BITS, PAD, Schema
from loopctr.errors import UserError
from loopctr.layers.amtl import AMTLEmbedding
from loopctr.layers.cross_features import PairCrossFeatures
from loopctr.layers.hash_embedding import BinaryCodeEmbedding


class FeatureEmbedding(nn.Module):
    """Embeds every feature field of a batch.

    Categorical fields give (B, d), sequence fields (B, L, d) with zeros at padding (id PAD), numeric
    fields (B, d) as the value times a learned vector (FuxiCTR's numeric embedding). The vocabularies in
    `hashed`, and the schema's hashed ones (whose ids are token hashes), get binary-code hash tables about
    `hash_compression` times smaller than one row per id; those in `amtl`, a per-value size (AMTL, layers/amtl.py:
    `amtl_options` are its hidden units and temperature). The schema's cross fields are numeric fields whose
    values `cross` computes from two categorical fields' ids (layers/cross_features.py).
    """

    def __init__(self, schema: Schema, vocab_sizes: dict[str, int], dim: int, init_std: float = 1e-4,
                 hashed: list[str] = (), hash_compression: float = 10.0, amtl: list[str] = (),
                 amtl_options: tuple[int, float] = (32, 1.0)):
        super().__init__()
        self.schema = schema
        self.dim = dim
        self.init_std = init_std
        for setting, names in (("hash_embedding", hashed), ("amtl", amtl)):
            unknown = sorted(set(names) - set(schema.vocabularies))
            if unknown:
                raise UserError(f"model.{setting}: {unknown} are not vocabularies of the schema "
                                f"({list(schema.vocabularies)})")
        token_hashed = schema.hashed_vocabularies
        both = sorted(set(amtl) & (set(hashed) | set(token_hashed)))
        if both:
            raise UserError(f"model.amtl: {both} are hashed; a per-value size needs one row per value")

        def table(v):
            if v in hashed or v in token_hashed:
                return BinaryCodeEmbedding(vocab_sizes[v], dim, hash_compression, HASH_BITS if v in token_hashed else None)
            if v in amtl:
                return AMTLEmbedding(vocab_sizes[v], dim, *amtl_options)
            return nn.Embedding(vocab_sizes[v], dim, padding_idx=PAD)

        self.tables = nn.ModuleDict({v: table(v) for v in schema.vocabularies})
        self.numeric_fields = [f.name for f in schema.of_type("numeric")]
        self.numeric = nn.Embedding(len(self.numeric_fields), dim) if self.numeric_fields else None
        crossed = [f.name for f in schema.fields if f.cross]
        self.cross = PairCrossFeatures(crossed, [f.name for f in schema.of_type("categorical")]) if crossed else None
        self.reset_parameters()

    def use_pretrained(self, dims: dict[str, int], usage: str = "init", freeze: bool = True) -> None:
        """Replace the tables of the vocabularies in `dims` (name -> vector size) by `PretrainedTable`s; their
        vectors are zeros until `load_pretrained` (a fresh run) or a checkpoint (a trained one) fills them."""
        for name, pretrained_dim in dims.items():
            if name not in self.tables:
                raise UserError(f"pretrained vectors for '{name}', which is not a vocabulary of the schema")
            if isinstance(self.tables[name], (BinaryCodeEmbedding, AMTLEmbedding)):
                raise UserError(f"'{name}' has pretrained vectors and cannot also be hashed (model.hash_embedding) "
                                "or sized per value (model.amtl)")
            vocab_size = self.tables[name].num_embeddings
            self.tables[name] = PretrainedTable(vocab_size, pretrained_dim, self.dim, usage, freeze)

    def load_pretrained(self, vectors: dict) -> None:
        """Copy prepared vectors (name -> (vocab_size, dim) array) into their `PretrainedTable`s."""
        for name, matrix in vectors.items():
            table = self.tables[name]
            if isinstance(table, PretrainedTable):
                with torch.no_grad():
                    table.vectors.weight.copy_(torch.as_tensor(matrix))

    def id_tables(self) -> list[nn.Embedding]:
        """The trainable one-row-per-id tables with a padding row (not pretrained vectors, not hash tables)."""
        tables = [t.id_table if isinstance(t, PretrainedTable) else t for t in self.tables.values()]
        return [t for t in tables if isinstance(t, nn.Embedding)]

    def amtl_tables(self) -> dict[str, AMTLEmbedding]:
        return {name: t for name, t in self.tables.items() if isinstance(t, AMTLEmbedding)}

    def reset_parameters(self):
        for table in self.id_tables():
            nn.init.normal_(table.weight, std=self.init_std)
            with torch.no_grad():
                table.weight[PAD].zero_()
        for table in self.tables.values():
            if isinstance(table, (BinaryCodeEmbedding, AMTLEmbedding)):
                table.reset_parameters(self.init_std)
        if self.numeric is not None:
            nn.init.normal_(self.numeric.weight, std=self.init_std)

    def numeric_values(self, batch: Batch) -> dict[str, torch.Tensor]:
        """numeric field -> its (B,) float values: the batch's, and the cross features computed from its ids."""
        if self.cross is None:
            return {name: batch.features[name].float() for name in self.numeric_fields}
        values = {name: batch.features[name].float() for name in self.numeric_fields if name not in self.cross.pairs}
        return {**values, **self.cross(batch)}

    def forward(self, batch: Batch, fields: list[str] | None = None) -> dict[str, torch.Tensor]:
        """field -> its embeddings: (B, d) for categorical and numeric fields, (T, d) for a sequence field (one
        row per event of its group's Jagged: nothing is embedded at padding, there is none)."""
        out = {}
        numeric = self.numeric_values(batch) if self.numeric is not None else {}
        for f in self.schema.fields:
            if fields is not None and f.name not in fields:
                continue
            if f.type == "numeric":
                i = self.numeric_fields.index(f.name)
                out[f.name] = numeric[f.name].unsqueeze(-1) * self.numeric.weight[i]
            elif f.type == "categorical":
                out[f.name] = self.tables[f.vocab](batch.features[f.name])
            else:
                out[f.name] = self.tables[f.vocab](batch.jagged(f.name).values[f.name])
        return out

    def pooled(self, batch: Batch, fields: list[str] | None = None) -> list[torch.Tensor]:
        """Each field's (B, d) vector in schema order (only `fields`, if given); sequences mean-pooled over
        their events."""
        return pool_sequences(self(batch, fields), batch)


class PretrainedTable(nn.Module):
    """Embeds ids through pretrained vectors (FuxiCTR's PretrainedEmbedding usages), output size `dim`.

    init: the vectors (through a Linear when their size is not `dim`); sum: a trainable id embedding plus the
    projected vectors; concat: the id embedding and the vectors, concatenated, through a Linear. Row 0
    (padding) and rows without a vector are zeros in the prepared matrix.
    """

    def __init__(self, vocab_size: int, pretrained_dim: int, dim: int, usage: str = "init", freeze: bool = True):
        super().__init__()
        if usage not in ("init", "sum", "concat"):
            raise UserError(f"pretrained usage '{usage}' is not one of ['init', 'sum', 'concat']")
        self.usage = usage
        self.vectors = nn.Embedding(vocab_size, pretrained_dim, padding_idx=PAD)
        nn.init.zeros_(self.vectors.weight)
        self.vectors.weight.requires_grad_(not freeze)
        self.id_table = nn.Embedding(vocab_size, dim, padding_idx=PAD) if usage != "init" else None
        in_dim = pretrained_dim + (dim if usage == "concat" else 0)
        self.proj = nn.Linear(in_dim, dim, bias=False) if in_dim != dim or usage == "concat" else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.vectors(ids)
        if self.usage == "concat":
            return self.proj(torch.cat([self.id_table(ids), x], dim=-1))
        if self.proj is not None:
            x = self.proj(x)
        return x + self.id_table(ids) if self.usage == "sum" else x


def pool_sequences(emb: dict[str, torch.Tensor], batch: Batch) -> list[torch.Tensor]:
    """The (B, d) vectors of `emb` in its order, the (T, d) sequences mean-pooled over each row's events."""
    owner = {name: jag for jag in batch.sequences for name in jag.values}
    return [owner[name].segment_mean(v) if name in owner else v for name, v in emb.items()]


def masked_mean(seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid positions of (B, L, d); zeros for an empty sequence."""
    mask = mask.unsqueeze(-1).to(seq.dtype)
    return (seq * mask).sum(1) / mask.sum(1).clamp_min(1.0)
