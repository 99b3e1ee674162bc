"""Matplotlib figures for reports, without pyplot's global state (Figure + savefig use Agg)."""

from __future__ import annotations

from pathlib import Path

from .errors import MinisirError


def figure(width: float = 7.0, height: float = 4.0):
    try:
        from matplotlib.figure import Figure  # Figure + savefig use Agg; no pyplot global state
    except ImportError as exc:
        raise MinisirError("reports need matplotlib: run `pip install matplotlib`") from exc
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)


def integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_png(fig, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path
