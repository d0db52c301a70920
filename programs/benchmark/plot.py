"""The PNG plot: mean test accuracy against mean LM calls per user, one point (with its 95% CI) per method."""

import logging
from collections.abc import Sequence
from pathlib import Path

from programs.benchmark.summary import MethodSummary

logger = logging.getLogger(__name__)


def plot_accuracy_vs_calls(summaries: Sequence[MethodSummary], path: Path, *, title: str,
                           floor: float | None = None, metric: str = "test accuracy") -> bool:
    """Write the plot; False (with a warning) when matplotlib is missing or no method ran.

    The x axis is symmetric-log, so the LM-free floor (0 calls) sits at 0 next to methods with hundreds of calls;
    `metric` names the y axis ("test score" on the rating task).
    """
    points = [s for s in summaries if s.accuracy is not None]
    if not points:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed, so no plot: pip install 'fermi-dspy[plot]'")
        return False
    figure, axes = plt.subplots(figsize=(11.0, 5.6))
    markers = "osD^vP*Xhp<>"
    colors = plt.get_cmap("tab20").colors
    for index, summary in enumerate(points):
        accuracy = summary.accuracy
        errors = [[accuracy.mean - accuracy.low], [accuracy.high - accuracy.mean]]
        axes.errorbar([summary.total_calls], [accuracy.mean], yerr=errors, fmt=markers[index % len(markers)],
                      color=colors[(2 * index) % len(colors) + (index // 10)], capsize=4, markersize=8,
                      label=f"{summary.label} (n={summary.users_ok}): {accuracy.mean:.3f}")
    if floor is not None:
        axes.axhline(floor, color="grey", linestyle="--", linewidth=0.8, label="LM-free floor")
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlim(left=-1)
    axes.set_xlabel("LM calls per user (compile + test, mean; symlog scale)")
    axes.set_ylabel(f"{metric} (mean over users, 95% bootstrap CI)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return True
