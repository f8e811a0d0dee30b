"""The overload bench's plot: goodput and interactive p99 queue wait against offered
load, with and without admission control (matplotlib, drawn off-screen)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchyard.ops.bench.overload import Row

__all__ = ["plot_overload"]


def plot_overload(rows: Sequence[Row], capacity: float, target_s: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (good, wait) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, style in (("admission control", "o-"), ("no admission control", "s--")):
        mine = [r for r in rows if r.mode == mode]
        loads = [r.load for r in mine if r.group == "all"]
        good.plot(loads, [r.stats.goodput_per_s / capacity for r in mine if r.group == "all"],
                  style, label=mode)
        wait.plot(loads, [r.stats.wait_p99_ms / 1000 for r in mine
                          if r.group == "interactive"], style, label=mode)
    good.axhline(0.9, color="grey", linewidth=0.8, linestyle=":", label="90% of capacity")
    good.set(xlabel="offered load (x capacity)", ylabel="goodput (share of capacity)",
             title="Goodput: succeeded within deadline", ylim=(0, 1.1))
    wait.axhline(target_s, color="grey", linewidth=0.8, linestyle=":",
                 label="interactive wait target")
    wait.set(xlabel="offered load (x capacity)", ylabel="seconds", yscale="log",
             title="Interactive p99 queue wait")
    for ax in (good, wait):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"switchyard bench overload (capacity {capacity:.0f} jobs/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
