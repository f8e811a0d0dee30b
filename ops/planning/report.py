"""What `switchyard plan` prints and writes: the table, the config snippet, the plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from switchyard.broker.schemas import PRIORITIES
from switchyard.ops.planning.planner import Candidate, PoolPlan
from switchyard.ops.planning.workload import Workload

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot", "render", "snippet"]

def _per(values: dict[str, float], fmt: str) -> str:
    return "/".join(format(values[p], fmt) if p in values else "-" for p in PRIORITIES)


def _row(c: Candidate, mark: str = "") -> str:
    return (f"  {mark:<2}{c.workers:>7}  {'yes' if c.spill else 'no':<5}{c.scale:>7.1f}x"
            f"{_per(c.wait_p50_ms, '.0f'):>18}{_per(c.wait_p99_ms, '.0f'):>18}"
            f"{_per({p: g * 100 for p, g in c.goodput.items()}, '.1f'):>18}"
            f"{c.spilled:>8.1%}{c.refused:>8.1%}{c.usd_h:>10.2f}  "
            + ("meets" if c.meets else "; ".join(c.misses)))


def _header() -> str:
    return (f"  {'':<2}{'workers':>7}  {'spill':<5}{'targets':>8}{'p50 wait i/s/b ms':>18}"
            f"{'p99 wait i/s/b ms':>18}{'goodput i/s/b %':>18}{'spilled':>8}"
            f"{'refused':>8}{'$/hour':>10}  SLOs")


def render(workload: Workload, plans: Sequence[PoolPlan], spend: dict[str, float] | None
           ) -> str:
    out = [f"workload {workload.name!r}: each candidate simulated for {workload.seconds:.0f} s "
           "of its busiest hour"]
    total = tokens = 0.0
    for plan in plans:
        prof, hw = plan.profile, plan.profile.hardware
        out += ["", f"pool {plan.pool} ({prof.engine}, {prof.source} profile: "
                f"{hw.gpu or hw.cpu} on {hw.host}, {prof.created}): offered "
                f"{plan.offered_per_s:.1f} jobs/s, {plan.tokens_per_s:.0f} tokens/s; "
                f"Erlang C first guess {plan.seed} workers", _header()]
        out += [_row(c, "->" if c is plan.chosen else "") for c in plan.tried]
        c = plan.chosen
        spilling = f" (overflow: {plan.provider})" if c.spill else ""
        out.append(f"  plan: {c.workers} workers{spilling}"
                   f": ${c.gpu_usd_h:.2f}/h GPU + ${c.provider_usd_h:.2f}/h provider = "
                   f"${c.usd_h:.2f}/h, ${plan.usd_per_mtok:.3f} per million tokens"
                   + ("" if c.meets else " (NO worker count tried meets the SLOs)"))
        cheaper = [n for n, a in plan.alternatives.items()
                   if a is not None and a.meets and a.usd_h < c.usd_h]
        if cheaper:
            out.append(f"  cheaper, and meeting the SLOs: {', '.join(cheaper)} (below)")
        out.append("  alternatives:")
        for name, alt in plan.alternatives.items():
            if alt is None:
                out.append(f"    {name:<17} n/a")
                continue
            out.append(f"    {name:<17}{alt.workers:>3} workers  ${alt.usd_h:>9.2f}/h  "
                       f"p99 wait {_per(alt.wait_p99_ms, '.0f')} ms  spilled {alt.spilled:.1%}"
                       f"  refused {alt.refused:.1%}  "
                       + ("meets" if alt.meets else "; ".join(alt.misses)))
        total += c.usd_h
        tokens += plan.tokens_per_s
    out += ["", f"total: ${total:.2f}/hour, ${total * 24:.2f}/day, "
            f"${total / max(1e-9, tokens * 3600 / 1e6):.3f} per million tokens"]
    if spend is not None:
        spent = ", ".join(f"{('gpu' if k == 'provider:-' else k)} ${v:.4f}"
                          for k, v in sorted(spend.items())) or "nothing yet"
        out.append(f"spent so far (Redis): {spent}")
    return "\n".join(out)


def snippet(plans: Sequence[PoolPlan], source: str) -> str:
    lines = [f"# switchyard plan {source}: the wait targets the plan was simulated with",
             "# (the caps they size bind first), and fixed caps as a backstop. Run the",
             "# worker counts below (`switchyard worker --pool NAME` on as many GPUs), or",
             "# let KEDA follow switchyard_recommended_workers."]
    for plan in plans:
        c = plan.chosen
        lines += ["", f"# pool {plan.pool}: {c.workers} workers, ${c.usd_h:.2f}/hour",
                  f"[pools.{plan.pool}.wait_targets]",
                  *(f"{p} = {t}" for p, t in plan.wait_targets.items()),
                  f"[pools.{plan.pool}.caps]  # a backstop: a deadline's worth of the "
                  "planned capacity", *(f"{p} = {n}" for p, n in plan.caps.items())]
    return "\n".join(lines) + "\n"


def plot(workload: Workload, plans: Sequence[PoolPlan], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(plans), 2, figsize=(12, 4.2 * len(plans)), squeeze=False)
    for (size, load), plan in zip(axes, plans, strict=True):
        workers = [c.workers for c in plan.tried]
        size.plot(workers, [c.usd_h for c in plan.tried], "k-o", label="$/hour")
        size.set(xlabel="workers", ylabel="$/hour",
                 title=f"{plan.pool}: cost and p99 queue wait against workers")
        waits = size.twinx()
        _waits(waits, workers, [c.wait_p99_ms for c in plan.tried], workload)
        size.axvline(plan.chosen.workers, color="green", linewidth=1, alpha=0.6,
                     label=f"plan: {plan.chosen.workers}")
        size.legend(loc="upper left", fontsize=8)
        waits.legend(loc="center right", fontsize=7)
        loads = [x for x, _ in plan.load_curve]
        _waits(load, loads, [w for _, w in plan.load_curve], workload)
        load.axvline(1.0, color="green", linewidth=1, alpha=0.6)
        load.set(xlabel="load (x the workload's rate)",
                 title=f"{plan.pool}: p99 queue wait against load, {plan.chosen.workers} workers")
        load.legend(fontsize=8)
        for ax in (size, load):
            ax.grid(alpha=0.3)
    fig.suptitle(f"switchyard plan: {workload.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _waits(ax: Axes, xs: Sequence[float], waits: Sequence[dict[str, float]],
           workload: Workload) -> None:
    colors = {"interactive": "tab:red", "standard": "tab:blue", "batch": "tab:orange"}
    for p in PRIORITIES:
        ys = [w.get(p) for w in waits]
        if all(y is None for y in ys):
            continue
        ax.plot(xs, [max(1.0, y or 0.0) for y in ys], "--.", color=colors[p],
                label=f"p99 wait {p}")
        slo = workload.slo.get(p)
        if slo is not None and slo.wait_p99_s:
            ax.axhline(slo.wait_p99_s * 1000, color=colors[p], linewidth=0.8,
                       linestyle=":", label=f"SLO {p}")
    ax.set(ylabel="p99 queue wait, ms", yscale="log")
