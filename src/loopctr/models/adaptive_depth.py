"""Adaptive per-sample depth for LoopCTR (the paper's future work): after every loop pass, a small exit head
decides from the loop state whether another pass is worth it; rows that stop are read out and leave the batch.

- `ExitHead`: an MLP over [the loop state at the read-out tokens (`LoopCTR.exit_state`), its relative change
  since the previous pass, a one-hot of the pass index] -> the logit of "stop here". It never runs the decoder:
  only the rows that stop are decoded, once, so a row costs its own passes plus one read-out.
- Fitting ([I], a choice of ours): after training, on the training split, the model frozen. The target at pass
  t < K is 1 when no deeper depth gives the row a lower logloss (continuing does not pay for this row), BCE.
  The model is unchanged by construction, so any finished run can be given adaptive depth.
- Threshold: a row stops at the first pass whose stop probability exceeds it (and at K = train_loops in any
  case). `calibrate` lays the thresholds against the mean passes they cost on a split, so that a budget of
  mean passes chosen on validation gives the threshold applied to test and in serving.
Ouro and PonderNet learn an exit distribution jointly with the model; a post-hoc head keeps the trained model
(and its fixed-depth predictions) exactly as it was.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ExitHead(nn.Module):
    def __init__(self, state_dim: int, max_depth: int, hidden: int = 64):
        super().__init__()
        self.state_dim, self.max_depth, self.hidden = state_dim, max_depth, hidden
        self.net = nn.Sequential(nn.Linear(state_dim + 1 + max_depth, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def features(self, t: int, state: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        change = (torch.zeros(state.shape[0], device=state.device) if previous is None
                  else (state - previous).norm(dim=-1) / previous.norm(dim=-1).clamp_min(1e-6))
        depth = F.one_hot(torch.full((state.shape[0],), t - 1, device=state.device), self.max_depth).to(state.dtype)
        return torch.cat([state, change.unsqueeze(-1).to(state.dtype), depth], dim=-1)

    def forward(self, t: int, state: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        return self.net(self.features(t, state, previous)).squeeze(-1)

    def decider(self, threshold: float):
        """The `decide` of `LoopCTR.forward_adaptive`: stop where the stop probability exceeds `threshold`."""
        return lambda t, state, previous: torch.sigmoid(self(t, state, previous)) > threshold

    def spec(self) -> dict:
        return {"state_dim": self.state_dim, "max_depth": self.max_depth, "hidden": self.hidden}


@torch.no_grad()
def collect(model, batches, max_depth: int, head: ExitHead | None = None, max_rows: int | None = None) -> dict:
    """Every pass's logits (K, N) and labels (N,) of the batches, and either the exit features of passes
    1..K-1 (K-1, N, F) for fitting (`head` None: features of a fresh head's layout) or the head's stop
    probabilities (K-1, N)."""
    model.eval()
    layout = head or ExitHead(1, max_depth)
    logits, labels, groups, side = [], [], [], []
    seen = 0
    for batch in batches:
        per_depth, per_pass, previous = [], [], None
        for t, logit, state in model.passes(batch, max_depth):
            per_depth.append(logit)
            if t < max_depth:
                per_pass.append(torch.sigmoid(head(t, state, previous)) if head is not None
                                else layout.features(t, state, previous))
            previous = state
        logits.append(torch.stack(per_depth))
        side.append(torch.stack(per_pass) if per_pass else torch.zeros(0, batch.size))
        labels.append(batch.label)
        if batch.group is not None:
            groups.append(batch.group)
        seen += batch.size
        if max_rows is not None and seen >= max_rows:
            break
    out = {"logits": torch.cat(logits, 1).numpy(), "labels": torch.cat(labels).numpy()}
    if groups:
        out["groups"] = torch.cat(groups).numpy()
    out["stop_probs" if head is not None else "features"] = torch.cat(side, 1).numpy()
    return out


def stop_targets(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K-1, N): 1 where no deeper depth gives the row a lower logloss than depth t."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    loss = -(labels * np.log(np.clip(p, 1e-7, 1)) + (1 - labels) * np.log(np.clip(1 - p, 1e-7, 1)))
    best_after = np.minimum.accumulate(loss[::-1], axis=0)[::-1]  # best loss over depths t..K
    return (loss[:-1] <= best_after[1:] + 1e-9).astype(np.float32)


def fit_exit_head(collected: dict, max_depth: int, epochs: int = 5, lr: float = 1e-3, batch_size: int = 4096,
                  seed: int = 0, log=print) -> ExitHead:
    """An exit head fitted to `collect`ed training features (see the module docstring)."""
    features = torch.from_numpy(collected["features"])  # (K-1, N, F)
    targets = torch.from_numpy(stop_targets(collected["logits"], collected["labels"]))
    x = features.reshape(-1, features.shape[-1])
    y = targets.reshape(-1)
    torch.manual_seed(seed)
    head = ExitHead(x.shape[1] - 1 - max_depth, max_depth)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0])
        total = 0.0
        for start in range(0, x.shape[0], batch_size):
            idx = order[start:start + batch_size]
            loss = F.binary_cross_entropy_with_logits(head.net(x[idx]).squeeze(-1), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.shape[0]
        log(f"exit head: epoch {epoch + 1}/{epochs}, loss {total / x.shape[0]:.4f} "
            f"(stop targets: {float(y.mean()):.1%} of {x.shape[0]:,} row-passes)")
    return head.eval()


def exit_depths(stop_probs: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) the depth at which each row stops: the first pass whose probability exceeds `threshold`, else K."""
    over = stop_probs > threshold  # (K-1, N)
    k = stop_probs.shape[0] + 1
    first = np.where(over.any(0), over.argmax(0) + 1, k)
    return first


def thresholds(stop_probs: np.ndarray, n: int = 41) -> np.ndarray:
    """Candidate thresholds: quantiles of the stop probabilities (every mean-pass level from 1 to K), plus 1."""
    qs = np.quantile(stop_probs.reshape(-1), np.linspace(0, 1, n)) if stop_probs.size else np.zeros(0)
    return np.unique(np.concatenate([qs - 1e-9, [1.0]]))


def calibrate(collected: dict, metric, also: tuple[float, ...] = ()) -> list[dict]:
    """Every candidate threshold (and those in `also`) with its mean passes and `metric(labels, preds)` on the
    collected split."""
    probs, logits, labels = collected["stop_probs"], collected["logits"], collected["labels"]
    rows = np.arange(labels.shape[0])
    curve = []
    for tau in np.unique(np.concatenate([thresholds(probs), also])):
        depth = exit_depths(probs, tau)
        preds = 1.0 / (1.0 + np.exp(-logits[depth - 1, rows]))
        curve.append({"threshold": float(tau), "mean_passes": float(depth.mean()), "auc": metric(labels, preds)})
    return curve


def threshold_for_budget(curve: list[dict], budget: float) -> dict:
    """The calibrated point of best AUC among those within `budget` mean passes (the cheapest if none is)."""
    within = [p for p in curve if p["mean_passes"] <= budget + 1e-9]
    if not within:
        return min(curve, key=lambda p: p["mean_passes"])
    return max(within, key=lambda p: (p["auc"], -p["mean_passes"]))
