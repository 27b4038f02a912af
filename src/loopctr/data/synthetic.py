"""The embedded default dataset: seeded interaction logs with planted, learnable structure, turned into
CTR samples by the DIN protocol, in the AmazonElectronics_x1 format.

What a model can learn from it:
- user taste: every user has a few interest categories with Dirichlet weights; most events come from them;
- item popularity: items are drawn with Zipf weights within their category; negatives are drawn uniformly;
- category affinity and recency: the next event stays in the current category with probability `stay`;
- item-level affinity: items form small clusters (related products); with probability `related` the next
  event is an unseen item from the cluster of a recent event (the last one with probability `recency`).
  Clusters are not a feature, and a mean of 20 item embeddings cannot say which of hundreds of clusters
  the history touched, while target attention compares the target with every event: this is where
  sequence-aware models (DIN) beat pooled ones (DNN).

DIN protocol (as for AmazonElectronics_x1): for each user's interactions after the first, a positive (the
item, with the earlier items as history) and a negative (a random item the user never interacted with, same
history). The last interaction of each user goes to test, the second-to-last to valid, the rest to train.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from loopctr.errors import UserError


@dataclass
class SyntheticConfig:
    users: int = 3000
    items: int = 3000
    categories: int = 30
    cluster_size: int = 6  # items per cluster of related items
    interests_per_user: int = 4
    min_events: int = 6  # per user, including the first (never a target)
    max_events: int = 30
    related: float = 0.5  # probability that the next event comes from the cluster of a recent event
    recency: float = 0.7  # ... of the last event (otherwise of a uniformly chosen earlier event)
    stay: float = 0.5  # probability that a non-related event stays in the current category
    explore: float = 0.05  # probability of an event outside the user's interests
    zipf: float = 0.8  # item popularity exponent within a category
    seed: int = 0

    def validate(self):
        if self.min_events < 3:
            raise UserError("synthetic: min_events must be >= 3 (train, valid and test each need an event)")
        if self.max_events < self.min_events:
            raise UserError("synthetic: max_events must be >= min_events")
        if self.interests_per_user > self.categories:
            raise UserError("synthetic: interests_per_user cannot exceed categories")
        if self.items < self.categories * self.cluster_size or self.items < 2 * self.max_events:
            raise UserError("synthetic: need items >= categories * cluster_size and items >= 2 * max_events")
        for name in ("related", "recency", "stay", "explore"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"synthetic: {name} must be a probability")


def generate_logs(cfg: SyntheticConfig) -> tuple[list[np.ndarray], np.ndarray]:
    """Per user, a time-ordered array of distinct item ids (1-based); and each item's category (1-based)."""
    rng = np.random.default_rng(cfg.seed)
    item_cate = np.concatenate([[0], rng.integers(1, cfg.categories + 1, cfg.items)])
    by_cate = [np.flatnonzero(item_cate == c) for c in range(cfg.categories + 1)]
    cluster = np.zeros(cfg.items + 1, dtype=np.int64)  # clusters never cross categories
    members: list[np.ndarray] = []
    for c in range(1, cfg.categories + 1):
        for chunk in np.array_split(rng.permutation(by_cate[c]), max(1, len(by_cate[c]) // cfg.cluster_size)):
            cluster[chunk] = len(members)
            members.append(chunk)
    popularity = []
    for c in range(cfg.categories + 1):
        w = 1.0 / rng.permutation(np.arange(1, len(by_cate[c]) + 1)) ** cfg.zipf  # popularity rank independent of id
        popularity.append(w / w.sum() if len(w) else w)
    sequences = []
    for _ in range(cfg.users):
        interests = rng.choice(np.arange(1, cfg.categories + 1), cfg.interests_per_user, replace=False)
        taste = rng.dirichlet(np.full(cfg.interests_per_user, 1.0))
        n = int(rng.integers(cfg.min_events, cfg.max_events + 1))
        seen: set[int] = set()
        events: list[int] = []
        current = int(interests[rng.choice(cfg.interests_per_user, p=taste)])
        while len(events) < n:
            item = 0
            if events and rng.random() < cfg.related:
                anchor = events[-1] if rng.random() < cfg.recency else events[int(rng.integers(len(events)))]
                fresh = [i for i in members[cluster[anchor]] if i not in seen]
                item = int(fresh[int(rng.integers(len(fresh)))]) if fresh else 0
            if not item:
                u = rng.random()
                if u < cfg.explore:
                    cate = int(rng.integers(1, cfg.categories + 1))
                elif u < cfg.explore + (1 - cfg.explore) * cfg.stay:
                    cate = current
                else:
                    cate = int(interests[rng.choice(cfg.interests_per_user, p=taste)])
                if len(by_cate[cate]) == 0:
                    continue
                item = int(by_cate[cate][rng.choice(len(by_cate[cate]), p=popularity[cate])])
            if item not in seen:
                seen.add(item)
                events.append(item)
                current = int(item_cate[item])
        sequences.append(np.array(events, dtype=np.int64))
    return sequences, item_cate


def sequential_negatives(sequences: list[np.ndarray], n_items: int, seed: int) -> np.ndarray:
    """One negative per target (every event after a user's first, in log order), drawn one after another
    from the generator's seed, so that the dataset depends on the generator settings alone."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for events in sequences:
        seen = set(events.tolist())
        for _ in range(1, len(events)):
            negative = int(rng.integers(1, n_items + 1))
            while negative in seen:
                negative = int(rng.integers(1, n_items + 1))
            out.append(negative)
    return np.array(out, dtype=np.int64).reshape(-1, 1)


def din_samples(sequences: list[np.ndarray], item_cate: np.ndarray, seed: int, max_history: int = 100):
    """DIN-protocol samples per split (x1 columns), built by the shared builder for real logs
    (`loopctr.data.din_protocol`) with the generator's own negative draws."""
    from loopctr.data.din_protocol import Log, din_protocol

    lengths = np.array([len(e) for e in sequences], dtype=np.int64)
    n_ids = item_cate.shape[0]  # item ids 1..items (0 unused)
    log = Log(user=np.repeat(np.arange(len(sequences), dtype=np.int64), lengths),
              item=np.concatenate(sequences).astype(np.int64),
              user_tokens=pa.array([str(u) for u in range(1, len(sequences) + 1)]),
              item_tokens=pa.array([str(i) for i in range(n_ids)]),
              cate_tokens=pa.array([str(c) for c in item_cate]), source="<synthetic>")
    return din_protocol(log, max_history=max_history, split="leave_last_out",
                        negative_items=sequential_negatives(sequences, n_ids - 1, seed))


def generate_splits(cfg: SyntheticConfig) -> dict[str, pa.Table]:
    sequences, item_cate = generate_logs(cfg)
    return din_samples(sequences, item_cate, cfg.seed)
