"""Power-law fits y = a * x^-b + c of a quality measure (logloss, 1 - AUC) against a scale (parameters, FLOPs,
training rows), numpy only.

For a fixed offset c the fit is linear least squares of log(y - c) on log x; c is then chosen on a grid below
min(y) to minimise the squared error in y itself, and R^2 is measured in y. With fewer than 4 distinct x the
offset is not identifiable (3 parameters, 3 points), so c = 0 there. The interval of the exponent b is a
bootstrap over seeds: seeds drawn with replacement, the per-x means refitted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_POINTS_FOR_OFFSET = 4
GOOD_FIT_R2 = 0.8


@dataclass
class PowerLaw:
    a: float
    b: float
    c: float
    r2: float
    points: int  # distinct x
    b_low: float | None = None  # 95 % bootstrap interval of b over seeds (None: a single seed)
    b_high: float | None = None

    def __call__(self, x):
        return self.a * np.asarray(x, dtype=float) ** -self.b + self.c

    @property
    def holds(self) -> bool:
        return self.r2 >= GOOD_FIT_R2

    def to_dict(self) -> dict:
        return {**asdict(self), "holds": self.holds}


def fit_power_law(x, y, offset: bool | None = None) -> PowerLaw:
    """Fit y = a x^-b + c to points (x > 0, y > 0); offset None: fit c when there are >= 4 distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or np.unique(x).size < 2 or (x <= 0).any() or (y <= 0).any():
        raise ValueError("a power-law fit needs at least 2 distinct x and positive x and y")
    points = int(np.unique(x).size)
    if offset is None:
        offset = points >= MIN_POINTS_FOR_OFFSET
    c = np.linspace(0.0, y.min() * (1 - 1e-6), 400) if offset else np.zeros(1)
    # least squares of log(y - c) on log x, for every candidate c at once
    lx = np.log(x) - np.log(x).mean()
    ly = np.log(y[None, :] - c[:, None])
    slope = (ly - ly.mean(axis=1, keepdims=True)) @ lx / (lx @ lx)
    log_a = ly.mean(axis=1) - slope * np.log(x).mean()
    sse = np.sum((np.exp(log_a)[:, None] * x[None, :] ** slope[:, None] + c[:, None] - y) ** 2, axis=1)
    best = int(np.argmin(sse))
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - sse[best] / sst if sst > 0 else float(sse[best] == 0)
    return PowerLaw(float(np.exp(log_a[best])), float(-slope[best]), float(c[best]), float(r2), points)


def per_x_means(x, seed, y, chosen) -> tuple[np.ndarray, np.ndarray]:
    """For every x: the mean over the `chosen` seeds (repeats count again) of each seed's value there."""
    out_x, out_y = [], []
    for xv in np.unique(x):
        values = [y[(x == xv) & (seed == s)].mean() for s in chosen if ((x == xv) & (seed == s)).any()]
        if values:
            out_x.append(xv)
            out_y.append(np.mean(values))
    return np.array(out_x, dtype=float), np.array(out_y, dtype=float)


def fit_over_seeds(x, seed, y, samples: int = 1000, rng_seed: int = 0) -> PowerLaw:
    """Fit the per-x means over seeds; the interval of b from `samples` bootstrap draws of the seeds."""
    x, seed, y = (np.asarray(v) for v in (x, seed, y))
    seeds = np.unique(seed)
    fit = fit_power_law(*per_x_means(x, seed, y, seeds))
    if seeds.size > 1:
        rng = np.random.default_rng(rng_seed)
        offset = fit.points >= MIN_POINTS_FOR_OFFSET
        draws = []
        for _ in range(samples):
            bx, by = per_x_means(x, seed, y, rng.choice(seeds, seeds.size, replace=True))
            if np.unique(bx).size >= 2:
                draws.append(fit_power_law(bx, by, offset).b)
        fit.b_low, fit.b_high = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    return fit
