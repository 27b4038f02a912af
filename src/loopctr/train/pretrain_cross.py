"""`loopctr pretrain-cross`: pre-train the cross-feature graph network (layers/cross_features.py) on a prepared
dataset's train split and write its decoder matrices next to the prepared data.

For each pair of categorical fields the train rows give, per pair of values seen together, impressions n and
clicks c; the edge's target is logit((c + m p) / (n + m)) - logit(p), with p the train split's rate and m
`smoothing` pseudo-impressions. A random `holdout` of the edges is left out of the graph and of the loss: the
step with the lowest error on them is kept for each pair (step 0, which predicts 0 for every pair, included),
and their error, against the table of statistics (which knows no unseen pair: it predicts 0 for them), says how
well the network generalises.

That network gives the cross features of evaluation and serving. Training rows get theirs from one of
`CROSS_FOLDS` more networks, each pre-trained on the statistics of the train rows outside its fold (`row_fold`, a
hash of a row's categorical ids): as out-of-fold target statistics, a training row's feature never saw its own
label, yet counts the other rows of its pair, as a test row's does (an in-sample feature would be the row's label
in disguise, and the model would learn to read it). The fold error compares each fold's network, on the pairs of
its rows, with the table of the other folds' statistics.
Written to the dataset directory: `cross/<left>-<right>.{left,right}[_folds].npy` and `schema.json`'s "cross"
entry, which `model.cross_features` reads. Valid and test rows are never looked at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch

from loopctr.atomic import atomic_write_bytes, atomic_write_text
from loopctr.config import apply_overrides
from loopctr.data.dataset import PreparedDataset
from loopctr.data.schema import parse_pair
from loopctr.errors import UserError
from loopctr.layers.cross_features import CROSS_FOLDS, CrossGNN, cross_logit, row_fold
from loopctr.runtime import free_cores

TABLE_BYTES_PER_PAIR = 12  # a statistics table: an int64 key of the two ids and a float32 value per seen pair


@dataclass
class PretrainCrossConfig:
    pairs: list[str] = field(default_factory=list)  # FIELD:FIELD pairs of categorical fields
    dim: int = 16  # node embedding size (the stored matrices have dim + 1 columns)
    layers: int = 1  # rounds of message passing
    smoothing: float = 10.0  # m: pseudo-impressions at the global rate added to every pair
    holdout: float = 0.1  # fraction of the seen pairs left out, to choose the step and measure generalisation
    steps: int = 400  # full-graph Adam steps
    lr: float = 0.02
    eval_every: int = 20
    seed: int = 0
    threads: int = 0  # torch threads; 0: the cores that are free

    def validate(self):
        if not self.pairs:
            raise UserError("pretrain-cross: no pairs; give --pairs FIELD:FIELD ...")
        for pair in self.pairs:
            parse_pair(pair, "pretrain-cross")
        if self.dim < 1 or self.layers < 0 or self.steps < 1 or self.eval_every < 1 or self.threads < 0:
            raise UserError("pretrain-cross: dim, steps and eval_every must be >= 1, layers and threads >= 0")
        if not 0.0 < self.holdout < 1.0:
            raise UserError(f"pretrain-cross: holdout must be in (0, 1), got {self.holdout}")
        if not (self.smoothing > 0 and self.lr > 0):
            raise UserError("pretrain-cross: smoothing and lr must be > 0")


@dataclass
class PairEdges:
    """The distinct value pairs of one field pair in a set of train rows: their keys (left id x right vocabulary
    size + right id, sorted), ids, targets and weights."""
    key: np.ndarray
    left: torch.Tensor
    right: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor


def _logit(p):
    return np.log(p) - np.log1p(-p)


def pair_statistics(left: np.ndarray, right: np.ndarray, labels: np.ndarray, right_size: int):
    """(left ids, right ids, impressions, clicks) of every distinct pair of values in the rows."""
    key = left.astype(np.int64) * right_size + right.astype(np.int64)
    pairs, inverse = np.unique(key, return_inverse=True)
    impressions = np.bincount(inverse, minlength=len(pairs))
    clicks = np.bincount(inverse, weights=labels.astype(np.float64), minlength=len(pairs))
    return pairs // right_size, pairs % right_size, impressions, clicks


def _pair_edges(left: np.ndarray, right: np.ndarray, labels: np.ndarray, right_size: int, smoothing: float,
                rate: float) -> PairEdges:
    left, right, n, c = pair_statistics(left, right, labels, right_size)
    smoothed = (c + smoothing * rate) / (n + smoothing)
    return PairEdges(left * right_size + right, torch.as_tensor(left), torch.as_tensor(right),
                     torch.as_tensor(_logit(smoothed) - _logit(rate), dtype=torch.float32),
                     torch.as_tensor(np.log1p(n), dtype=torch.float32))


def _error(projections: dict, pair: str, e: PairEdges, chosen: torch.Tensor) -> float:
    """The weighted root-mean-square error of a pair's predictions on the `chosen` edges."""
    left, right = projections[pair]
    error = cross_logit(left[e.left[chosen]], right[e.right[chosen]]) - e.target[chosen]
    return float(torch.sqrt((e.weight[chosen] * error ** 2).sum() / e.weight[chosen].sum()))


def _table_error(e: PairEdges, chosen: torch.Tensor, known: PairEdges | None = None) -> float:
    """The error on `chosen` edges of the table of `known`'s statistics: their target where it holds the pair,
    the global rate (0) where not (None: it holds none of them)."""
    predicted = torch.zeros_like(e.target)
    if known is not None:
        at = np.minimum(np.searchsorted(known.key, e.key), len(known.key) - 1)
        found = torch.as_tensor(known.key[at] == e.key)
        predicted[found] = known.target[torch.as_tensor(at)[found]]
    error = predicted[chosen] - e.target[chosen]
    return float(torch.sqrt((e.weight[chosen] * error ** 2).sum() / e.weight[chosen].sum()))


def _fit(config: PretrainCrossConfig, vocab_sizes: dict, vocab: dict, edges: dict[str, PairEdges],
         graph: dict[str, torch.Tensor], held_out: dict[str, torch.Tensor], seed: int, log) -> dict[str, dict]:
    """Pre-train one network on the `graph` edges of each pair; pair -> the step with the lowest error on its
    `held_out` edges: its decoder matrices and errors."""
    torch.manual_seed(seed)
    model = CrossGNN(vocab_sizes, [(pair, *vocab[pair]) for pair in edges], config.dim, config.layers)
    graph_edges = {pair: (e.left[graph[pair]], e.right[graph[pair]]) for pair, e in edges.items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    best: dict[str, dict] = {}

    def keep_best(step: int) -> float:
        with torch.no_grad():
            projections = model.projections(model.node_states(graph_edges))
        for pair, e in edges.items():
            error = _error(projections, pair, e, held_out[pair])
            if pair not in best or error < best[pair]["held_out_error"]:
                best[pair] = {"held_out_error": error, "train_error": _error(projections, pair, e, graph[pair]),
                              "best_step": step, "matrices": [m.numpy().astype(np.float32) for m in projections[pair]]}
        return float(np.mean([best[pair]["held_out_error"] for pair in edges]))

    keep_best(0)  # step 0 predicts 0 for every pair: a pair keeps a later step only if it beats that
    for step in range(1, config.steps + 1):
        projections = model.projections(model.node_states(graph_edges))
        loss = 0.0
        for pair, e in edges.items():
            w, (left, right) = e.weight[graph[pair]], projections[pair]
            error = cross_logit(left[graph_edges[pair][0]], right[graph_edges[pair][1]]) - e.target[graph[pair]]
            loss = loss + (w * error ** 2).sum() / w.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % config.eval_every == 0 or step == config.steps:
            log(f"step {step}: train loss {loss.item() / len(edges):.4f}, best held-out error {keep_best(step):.4f}")
    return best


def pretrain_cross(data_dir, pairs: list[str], overrides: list[str] = (), log=print) -> dict:
    """Pre-train on `data_dir`'s train split and write the matrices of `pairs` into it; returns the report (also
    in schema.json's "cross" entry, by pair)."""
    config = apply_overrides(PretrainCrossConfig(pairs=list(pairs)), list(overrides), "pretrain-cross")
    data = PreparedDataset(data_dir)
    torch.set_num_threads(config.threads or free_cores())
    schema, train = data.schema, data.split("train")
    schema.with_cross_features(config.pairs, "pretrain-cross")  # the pairs a model could read
    fields = {pair: parse_pair(pair) for pair in config.pairs}
    labels = np.asarray(train.labels)
    rate = float(np.mean(labels))
    if not 0.0 < rate < 1.0:
        raise UserError(f"pretrain-cross: the train split of {data.path} has a single label (rate {rate})")
    columns = {name: np.asarray(train.column(name)) for names in fields.values() for name in names}
    folds = row_fold([torch.from_numpy(np.array(train.column(f.name))) for f in schema.of_type("categorical")])
    folds = folds.numpy()
    vocab = {pair: tuple(schema.field(f).vocab for f in names) for pair, names in fields.items()}
    sizes = {v: data.vocab_sizes[v] for vs in vocab.values() for v in vs}

    def edges_of(rows: np.ndarray) -> dict[str, PairEdges]:
        return {pair: _pair_edges(columns[a][rows], columns[b][rows], labels[rows], sizes[vocab[pair][1]],
                                  config.smoothing, rate) for pair, (a, b) in fields.items()}

    def fit(edges: dict[str, PairEdges], seed: int, what: str):
        rng = np.random.default_rng(seed)
        held = {pair: torch.as_tensor(rng.random(len(e.left)) < config.holdout) for pair, e in edges.items()}
        for pair, h in held.items():
            if not bool(h.any()) or bool(h.all()):
                raise UserError(f"pretrain-cross: '{pair}' has {len(h)} distinct value pairs in {what}, too few to "
                                f"hold out {config.holdout:.0%} of them")
        log(f"pre-training on {what} ({config.holdout:.0%} of the value pairs held out)")
        return _fit(config, sizes, vocab, edges, {p: ~h for p, h in held.items()}, held, seed, log), held

    edges = edges_of(np.ones(len(labels), dtype=bool))
    full, held = fit(edges, config.seed, "every train row")
    by_fold, fold_errors, fold_table_errors = [], {p: [] for p in fields}, {p: [] for p in fields}
    for k in range(CROSS_FOLDS):
        outside, inside = edges_of(folds != k), edges_of(folds == k)
        kept, _ = fit(outside, config.seed + 1 + k, f"the train rows outside fold {k + 1} of {CROSS_FOLDS}")
        by_fold.append(kept)
        for pair, e in inside.items():  # fold k's pairs as its rows count them, against the other folds' table
            everything = torch.ones(len(e.left), dtype=torch.bool)
            matrices = tuple(torch.from_numpy(m) for m in kept[pair]["matrices"])
            fold_errors[pair].append(_error({pair: matrices}, pair, e, everything))
            fold_table_errors[pair].append(_table_error(e, everything, outside[pair]))
    (data.path / "cross").mkdir(exist_ok=True)
    meta = json.loads((data.path / "schema.json").read_text())
    report = {}
    for pair, kept in full.items():
        e, stem = edges[pair], f"cross/{pair.replace(':', '-')}"
        arrays = dict(zip(("left", "right"), kept.pop("matrices")))
        for i, side in enumerate(("left", "right")):
            arrays[f"{side}_folds"] = np.stack([fold[pair]["matrices"][i] for fold in by_fold])
        files = {name: f"{stem}.{name}.npy" for name in arrays}
        for name, array in arrays.items():
            atomic_write_bytes(data.path / files[name], lambda fh, a=array: np.save(fh, a))
        report[pair] = {
            "dim": config.dim + 1, "files": files, "seen_pairs": len(e.left), "held_out_pairs": int(held[pair].sum()),
            **kept, "held_out_error_of_table": _table_error(e, held[pair]),
            "fold_error": float(np.mean(fold_errors[pair])),
            "fold_error_of_table": float(np.mean(fold_table_errors[pair])),
            # what inference reads, and with the out-of-fold matrices that only training reads
            "stored_bytes": int(arrays["left"].nbytes + arrays["right"].nbytes),
            "stored_bytes_with_folds": int(sum(a.nbytes for a in arrays.values())),
            "table_bytes": TABLE_BYTES_PER_PAIR * len(e.left), "rate": rate,
            "settings": {k: getattr(config, k) for k in ("dim", "layers", "smoothing", "holdout", "steps", "lr",
                                                          "seed")}}
    meta["cross"] = {**meta.get("cross", {}), **report}
    atomic_write_text(data.path / "schema.json", json.dumps(meta, indent=2))
    return report
