"""Training curves of one or more runs in one figure: loss, eval loss, learning rate, grad norm, tokens/s.

Each run is one line per panel, labelled with its name, drawn from exactly the (step, value) pairs of its
``metrics.jsonl`` (records without the key, or with a non-finite value, are left out). matplotlib is imported
here, on use, with the Agg backend: no display needed, and ``mudpuppy --help`` does not pay for it.
"""

from __future__ import annotations

from typing import Any

from mudpuppy.launcher.progress import Metrics

PANELS = (
    ("loss", "train loss"),
    ("eval_loss", "eval loss"),
    ("learning_rate", "learning rate"),
    ("grad_norm", "grad norm"),
    ("tokens_per_second", "tokens/s"),
)
SIZE_INCHES = (8.0, 13.0)
DPI = 100


def figure(runs: list[tuple[str, Metrics]]) -> Any:
    """A matplotlib ``Figure`` with one panel per metric and one line per run (label: the run's name)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        ax.set_title(title, fontsize=10, loc="left")
        drawn = 0
        for name, metrics in runs:
            xs, ys = metrics.series(key)
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=name)
                drawn += 1
        if drawn:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    return fig


def save(fig: Any, path: str) -> None:
    fig.savefig(path, dpi=DPI)
