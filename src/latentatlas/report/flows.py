"""Figures of a trained 2-D flow: data, samples and learned density side by side."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["density_grid", "plot_flow"]


@torch.no_grad()
def density_grid(
    flow: torch.nn.Module, lim: tuple[float, float, float, float], n: int = 200,
    batch: int = 16384,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate ``exp(log_prob)`` of a 2-D unconditional flow on an ``n x n`` grid.

    Args:
        flow: a flow with ``features == 2`` and no context.
        lim: (xmin, xmax, ymin, ymax).
        n: grid points per axis.

    Returns:
        xs (n,), ys (n,), density (n, n) indexed [iy, ix].
    """
    anchor = next(flow.parameters())
    xs = np.linspace(lim[0], lim[1], n)
    ys = np.linspace(lim[2], lim[3], n)
    xx, yy = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=anchor.dtype,
                          device=anchor.device)
    lp = torch.cat([flow.log_prob(pts[i : i + batch]) for i in range(0, len(pts), batch)])
    return xs, ys, lp.exp().reshape(n, n).cpu().numpy()


def plot_flow(
    flow: torch.nn.Module,
    data: torch.Tensor,
    samples: torch.Tensor | None = None,
    n_samples: int = 5000,
    grid: int = 200,
    title: str | None = None,
    path: str | os.PathLike | None = None,
):
    """Three panels: the data, samples of the flow, and the flow's density on a grid.

    Args:
        flow: an unconditional flow with 2 features.
        data: (N, 2) data.
        samples: (M, 2) samples of the flow (drawn if None).
        n_samples: how many samples to draw if ``samples`` is None.
        grid: density grid points per axis.
        title: figure title.
        path: if given, the figure is saved there (PNG, 120 dpi).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if getattr(flow, "features", 2) != 2 or getattr(flow, "context_features", 0) != 0:
        raise ValueError(
            "flow: expected an unconditional flow with 2 features, got features="
            f"{getattr(flow, 'features', None)}, context={getattr(flow, 'context_features', None)}"
        )
    data_np = torch.as_tensor(data).detach().cpu().numpy()
    if samples is None:
        with torch.no_grad():
            samples = flow.sample(n_samples)
    samp_np = torch.as_tensor(samples).detach().cpu().numpy()
    lo = np.percentile(data_np, 0.5, axis=0)
    hi = np.percentile(data_np, 99.5, axis=0)
    pad = 0.15 * (hi - lo)
    lim = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    xs, ys, dens = density_grid(flow, lim, grid)

    fig, axes = plt.subplots(1, 3, figsize=(12, 4), constrained_layout=True)
    bins = [np.linspace(lim[0], lim[1], 120), np.linspace(lim[2], lim[3], 120)]
    axes[0].hist2d(data_np[:, 0], data_np[:, 1], bins=bins, cmap="viridis")
    axes[0].set_title(f"data (n={len(data_np)})")
    axes[1].hist2d(samp_np[:, 0], samp_np[:, 1], bins=bins, cmap="viridis")
    axes[1].set_title(f"flow samples (n={len(samp_np)})")
    axes[2].imshow(dens, origin="lower", extent=lim, aspect="auto", cmap="viridis")
    axes[2].set_title("learned density")
    for ax in axes:
        ax.set_xlim(lim[0], lim[1])
        ax.set_ylim(lim[2], lim[3])
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig
