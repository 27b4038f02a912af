"""Helpers shared by the models that read behaviour sequences (BST, HSTU, MTGR, SUAN; OneTrans uses `by_length`).

The (target, sequence) pairs come from `schema.sequence_targets()` (fields sharing a vocabulary, e.g.
(item_id, item_history), (cate_id, cate_history)). An event token is the concatenation of the paired
sequence fields' embeddings at that position; the target token the concatenation of the target fields'
embeddings, so both live in the same space (as in FuxiCTR's BST and DIN).
"""

from __future__ import annotations

import torch

from loopctr.errors import UserError

MIN_CHUNK_ROWS = 32


def require_pairs(schema, model_name: str) -> list[tuple[str, str]]:
    pairs = schema.sequence_targets()
    if not pairs:
        raise UserError(f"{model_name} needs a sequence field that shares a vocabulary with a target field "
                        f"(e.g. item_history with item_id); dataset '{schema.name}' has none")
    return pairs


def target_and_history(schema, emb: dict, batch: dict, pairs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """target (B, k*d), history (B, L, k*d) and its mask (B, L) (an event is real where any paired field is).

    The history is always returned padded on the left (newest event last), whatever the fields' padding side.
    """
    target = torch.cat([emb[t] for t, _ in pairs], dim=-1)
    history = torch.cat([emb[s] for _, s in pairs], dim=-1)
    mask = batch[pairs[0][1]] != 0
    for _, s in pairs[1:]:
        mask = mask | (batch[s] != 0)
    if schema.field(pairs[0][1]).padding == "post":
        history, mask = right_align(history, mask)
    return target, history, mask


def right_align(history: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's events (padded on the right) to the right end, newest event last."""
    length = history.shape[1]
    shift = length - mask.sum(1, keepdim=True)
    index = (torch.arange(length, device=mask.device)[None, :] - shift) % length
    return history.gather(1, index.unsqueeze(-1).expand_as(history)), mask.gather(1, index)


def context_vectors(model, batch: dict, pairs) -> list[torch.Tensor]:
    """(B, d) vectors of every field outside the paired sequences: categorical and numeric fields as embedded,
    sequence fields without a target mean-pooled. The read-out heads concatenate them with the model output."""
    paired = {s for _, s in pairs}
    names = [f.name for f in model.schema.fields if f.name not in paired]
    return model.embedding.pooled(batch, names)


def max_events(schema) -> int:
    """The widest a batch's sequences can be (the loader pads every sequence field to the batch's longest row)."""
    return max((f.max_len for f in schema.of_type("sequence")), default=0)


def by_length(fn, batch: dict, schema, chunks: int):
    """fn(sub_batch) -> (rows, ...) computed on `chunks` groups of rows of similar sequence length, each group's
    sequence fields cut to its longest row; the outputs are put back in the batch's row order.

    Public histories are mostly far shorter than the longest one in a batch, so this saves most of the work on
    padding. It is exact whenever `fn` ignores padded events and counts positions from the newest event
    (relative biases, right-aligned position tables), as the sequence models here do.
    """
    sequences = schema.of_type("sequence")
    if not sequences:
        return fn(batch)
    chunks = min(chunks, batch[sequences[0].name].shape[0] // MIN_CHUNK_ROWS)  # tiny groups cost more than they save
    if chunks <= 1:
        return fn(batch)
    n = batch[sequences[0].name].shape[1]
    padding = {f.name: f.padding for f in sequences}
    lengths = torch.stack([batch[f.name] != 0 for f in sequences]).any(0).sum(1)
    order = lengths.argsort()
    outs = []
    for rows in order.chunk(chunks):
        width = max(int(lengths[rows].max()), 1)
        sub = {}
        for key, value in batch.items():
            value = value[rows]
            if key in padding:  # a sequence field: keep the columns that hold events
                value = value[:, n - width:] if padding[key] == "pre" else value[:, :width]
            sub[key] = value
        outs.append(fn(sub))
    return torch.cat(outs).index_select(0, order.argsort())
