"""Figures, drawn headless (matplotlib's Agg backend) into PNG files; matplotlib is imported only here."""

from __future__ import annotations

from pathlib import Path

from loopctr.atomic import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    atomic_write_bytes(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    _pyplot().close(fig)


def _finish(fig, ax, path: Path, x_label: str, y_label: str, title: str, legend_size: int = 7) -> None:
    """Axis labels, a light grid, the legend and the title; then the PNG."""
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=legend_size)
    ax.set_title(title, fontsize=9)
    save(fig, path)


def depth_figure(report: dict, path: Path, title: str = "") -> None:
    """A looped model's evaluation by depth (an eval.json report with `by_depth`): AUC and logloss by depth with
    the oracle's AUC, the mean |p_t - p_1|, and per pass the relative update of the loop state."""
    plt = _pyplot()
    rows = report["by_depth"]
    depths = [r["depth"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    axes[0].plot(depths, [r["auc"] for r in rows], "o-", label="AUC")
    if "oracle" in report:
        axes[0].axhline(report["oracle"]["auc"], ls="--", color="grey", label="per-sample oracle")
    axes[0].set_ylabel("AUC")
    axes[0].legend(loc="best", fontsize=8)
    axes[1].plot(depths, [r["logloss"] for r in rows], "s-", color="tab:red")
    axes[1].set_ylabel("logloss")
    axes[2].plot(depths, [r["mean_abs_diff_to_first"] for r in rows], "o-")
    axes[2].set_ylabel(f"mean |p(depth) - p({depths[0]})|")
    for a in axes[:3]:
        a.set_xlabel("inference depth (loop passes)")
        a.set_xticks(depths)
    diag = report.get("loop_diagnostics")
    if diag:
        passes = list(range(1, len(diag["relative_update"]) + 1))
        axes[3].semilogy(passes, diag["relative_update"], "o-", label="written: |x_t - x_t-1| / |x_t-1|")
        axes[3].semilogy(passes, diag["relative_proposal"], "s--", label="block's update: |u_t| / |x_t-1|")
        axes[3].set_xlabel("loop pass t")
        axes[3].set_xticks(passes)
        axes[3].legend(loc="best", fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)


def adaptive_figure(report: dict, path: Path, title: str = "") -> None:
    """Adaptive depth (an eval.json `adaptive` report): AUC against mean passes over the exit thresholds, the
    fixed depths, the per-sample oracle and the threshold chosen on validation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    curve = sorted(report["curve"], key=lambda p: p["mean_passes"])
    ax.plot([p["mean_passes"] for p in curve], [p["auc"] for p in curve], "-", label="adaptive (every threshold)")
    ax.plot([r["depth"] for r in report["by_depth"]], [r["auc"] for r in report["by_depth"]], "s", label="fixed depth")
    ax.axhline(report["oracle"]["auc"], ls="--", color="grey", label="per-sample oracle")
    ax.plot([report["mean_passes"]], [report["auc"]], "o", color="tab:red",
            label=f"chosen on validation (budget {report['budget']:g})")
    _finish(fig, ax, path, "mean loop passes per row", "AUC", title, legend_size=8)


def scaling_figure(series, x_label: str, y_label: str, path: Path) -> None:
    """A scaling study on log-log axes: per model (name, x, y, PowerLaw fit) every seed's point, the fitted
    curve, and in the legend the exponent with its interval and R^2 (or that no power law fits)."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (name, x, y, fit) in enumerate(series):
        color = f"C{i}"
        ax.plot(x, y, "o", color=color, alpha=0.5, ms=4)
        grid = np.geomspace(x.min(), x.max(), 100)
        interval = f" [{fit.b_low:.3f}, {fit.b_high:.3f}]" if fit.b_low is not None else ""
        verdict = "" if fit.holds else ", no power law (R² < 0.8)"
        ax.plot(grid, fit(grid), "-", color=color,
                label=f"{name}: b = {fit.b:.3f}{interval}, c = {fit.c:.4g}, R² = {fit.r2:.2f}{verdict}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

    points = [np.concatenate([x for _, x, _, _ in series]), np.concatenate([y for _, _, y, _ in series])]
    for axis, values in zip((ax.xaxis, ax.yaxis), points):
        axis.set_minor_formatter(NullFormatter())  # minor labels overlap over less than a decade
        if values.max() < 10 * values.min():  # no power of ten inside: label evenly spaced values instead
            axis.set_major_locator(MaxNLocator(5))
            axis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.set_xlabel(x_label + " (log scale)")
    ax.set_ylabel(y_label + " (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize=7)
    ax.set_title(f"{y_label} against {x_label}: y = a x^-b + c, points are seeds", fontsize=9)
    save(fig, path)


def leaderboard_figure(rows: list[tuple[str, list[float]]], path: Path, title: str = "") -> None:
    """Test AUC per label (best first, as `rows` come): the mean with one std as error bar, every seed a point."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.35 * len(rows)))
    for i, (label, values) in enumerate(rows):
        v = np.asarray(values, dtype=float)
        ax.errorbar(v.mean(), i, xerr=v.std(ddof=1) if v.size > 1 else 0.0, fmt="s", color="C0", capsize=3)
        ax.plot(v, np.full(v.size, i), "o", color="C1", alpha=0.6, ms=4)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test AUC (square: mean ± std over seeds; dots: seeds)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=9)
    save(fig, path)


def curves_figure(rows: list[tuple[str, list[list[tuple[int, float]]]]], path: Path, title: str = "") -> None:
    """Validation AUC by epoch per label: the mean over the seeds that reached each epoch, seeds faint."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, curves) in enumerate(rows):
        for curve in curves:
            ax.plot([e for e, _ in curve], [a for _, a in curve], "-", color=f"C{i % 10}", alpha=0.25, lw=1)
        epochs = sorted({e for curve in curves for e, _ in curve})
        mean = [np.mean([a for curve in curves for e, a in curve if e == epoch]) for epoch in epochs]
        ax.plot(epochs, mean, "o-", color=f"C{i % 10}", ms=3, label=label)
    _finish(fig, ax, path, "epoch", "validation AUC", title)


def depth_by_label_figure(rows: list[tuple[str, list[list[dict]]]], path: Path, title: str = "") -> None:
    """Test AUC by inference depth per looped label (mean over seeds, one std as band)."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, evaluations) in enumerate(rows):
        depths = sorted({d["depth"] for ev in evaluations for d in ev})
        values = [[d["auc"] for ev in evaluations for d in ev if d["depth"] == depth] for depth in depths]
        mean, std = np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values])
        ax.plot(depths, mean, "o-", color=f"C{i % 10}", label=label)
        ax.fill_between(depths, mean - std, mean + std, color=f"C{i % 10}", alpha=0.15)
    _finish(fig, ax, path, "inference depth (loop passes)", "test AUC", title)


def reliability_figure(rows: list[tuple[str, list[list[dict]]]], path: Path, title: str = "") -> None:
    """Reliability diagram per label: click rate against mean prediction in each prediction bin, the seeds'
    bins pooled; the diagonal is perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    for i, (label, seeds) in enumerate(rows):
        pooled: dict[float, list[float]] = {}
        for bins in seeds:
            for b in bins:
                n, p, y = pooled.setdefault(b["lower"], [0, 0.0, 0.0])
                pooled[b["lower"]] = [n + b["count"], p + b["count"] * b["mean_pred"], y + b["count"] * b["mean_label"]]
        points = [(p / n, y / n) for n, p, y in (pooled[k] for k in sorted(pooled))]
        ax.plot([p for p, _ in points], [y for _, y in points], "o-", color=f"C{i % 10}", ms=3, label=label)
    _finish(fig, ax, path, "mean prediction in the bin", "click rate in the bin", title)
