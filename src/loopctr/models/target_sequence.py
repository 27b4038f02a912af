"""Pieces shared by the models that read a behaviour history (DIN, BST, HSTU, MTGR, SUAN).

The (target, sequence) pairs come from `schema.sequence_targets()` (fields sharing a vocabulary, e.g.
(item_id, item_history), (cate_id, cate_history)); the paired sequences are one sequence group, one Jagged of
the batch. An event is the concatenation of the paired sequence fields' embeddings, the target the
concatenation of the target fields' embeddings, so both live in the same space (as in FuxiCTR's BST and DIN).
"""

from __future__ import annotations

import torch

from loopctr.data.batch import MIN_GROUP_ROWS, Batch, Jagged, length_groups
from loopctr.errors import UserError


def require_pairs(schema, model_name: str) -> list[tuple[str, str]]:
    pairs = schema.sequence_targets()
    if not pairs:
        raise UserError(f"{model_name} needs a sequence field that shares a vocabulary with a target field "
                        f"(e.g. item_history with item_id); dataset '{schema.name}' has none")
    return pairs


def target_and_history(emb: dict, batch: Batch, pairs) -> tuple[torch.Tensor, Jagged, torch.Tensor]:
    """target (B, k*d), the history's Jagged and its events (T, k*d)."""
    target = torch.cat([emb[t] for t, _ in pairs], dim=-1)
    events = torch.cat([emb[s] for _, s in pairs], dim=-1)
    return target, batch.jagged(pairs[0][1]), events


def context_vectors(model, batch: Batch, pairs) -> list[torch.Tensor]:
    """(B, d) vectors of every field outside the paired sequences: categorical and numeric fields as embedded,
    sequence fields without a target mean-pooled. The read-out heads concatenate them with the model output."""
    paired = {s for _, s in pairs}
    names = [f.name for f in model.schema.fields if f.name not in paired]
    return model.embedding.pooled(batch, names)


def max_events(schema) -> int:
    """The longest a row's history can be (the prepared max_len of its sequence fields)."""
    return max((f.max_len for f in schema.of_type("sequence")), default=0)


def in_length_groups(encode, history: Jagged, events: torch.Tensor, groups: int, *per_row: torch.Tensor):
    """encode(padded history (b, w, D), mask (b, w), *per_row's rows) -> (b, ...), computed on up to `groups`
    groups of rows of similar length, each padded to its own longest row (newest event last); the outputs in
    the batch's row order. Public histories are mostly far shorter than a batch's longest, so this saves most
    of the work on padding; it is exact whenever `encode` ignores padded events and counts positions from the
    newest event (relative biases, right-aligned position tables), as the sequence models here do."""
    split = length_groups(history.lengths, groups, MIN_GROUP_ROWS)
    if len(split) == 1:
        return encode(history.to_dense(events), history.mask(), *per_row)
    outs = []
    for rows in split:
        sub, index = history.select(rows)
        outs.append(encode(sub.to_dense(events.index_select(0, index)), sub.mask(),
                           *[t.index_select(0, rows) for t in per_row]))
    return torch.cat(outs).index_select(0, torch.argsort(torch.cat(split)))
