"""PNG figures for 2-D experiments: samples over the data, densities, score fields, curves.

Plain functions of NumPy arrays that write one PNG each (matplotlib's Agg backend, no display).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: str) -> str:
    """Write ``fig`` to ``path`` as PNG (creating the folder) and close it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Images ``[N, H, W, C]`` with values in [0, 1] tiled row by row into one uint8 image
    ``[rows·(H+1)+1, columns·(W+1)+1, C]`` with 1-pixel white borders (grey images keep C = 1)."""
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = -(-n // columns)
    grid = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c), np.float32)
    for i, image in enumerate(np.clip(images, 0.0, 1.0)):
        r, q = divmod(i, columns)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = image
    return np.round(grid * 255).astype(np.uint8)


def save_image_grid(path: str, images: np.ndarray, columns: int | None = None) -> str:
    """Write :func:`image_grid` of ``images`` ([N, H, W, C] in [0, 1]) to ``path`` as PNG."""
    grid = image_grid(images, columns)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    plt.imsave(path, grid[..., 0] if grid.shape[-1] == 1 else grid,
               cmap="gray" if grid.shape[-1] == 1 else None, vmin=0, vmax=255)
    return path


def plot_samples(path: str, data: np.ndarray, samples: np.ndarray, title: str = "") -> str:
    """Generated samples (orange) over the training data (grey)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(data[:, 0], data[:, 1], s=1, c="0.6", alpha=0.4, label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=1, c="tab:orange", alpha=0.6, label="samples")
    ax.set_aspect("equal")
    ax.legend(markerscale=8, loc="upper right", fontsize=8)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_density(path: str, xs: np.ndarray, ys: np.ndarray, log_density: np.ndarray, title: str = "") -> str:
    """exp(log density) on a grid: ``log_density`` has shape [len(ys), len(xs)]."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(np.exp(log_density - log_density.max()), origin="lower", cmap="magma",
              extent=(xs[0], xs[-1], ys[0], ys[-1]))
    ax.set_title(title)
    return save_figure(fig, path)


def plot_score_field(path: str, points: np.ndarray, scores: np.ndarray, rotation: np.ndarray,
                     title: str = "") -> str:
    """Score arrows at ``points`` over a colour map of the rotational part ½‖J − Jᵀ‖²_F."""
    side = int(round(np.sqrt(points.shape[0])))
    fig, ax = plt.subplots(figsize=(5.2, 4.5))
    image = ax.imshow(rotation.reshape(side, side), origin="lower", cmap="viridis",
                      extent=(points[:, 0].min(), points[:, 0].max(), points[:, 1].min(), points[:, 1].max()))
    fig.colorbar(image, ax=ax, label="Asym = ½‖J − Jᵀ‖²")
    norms = np.linalg.norm(scores, axis=1, keepdims=True)
    unit = scores / np.maximum(norms, 1e-12)
    step = max(1, side // 20)
    grid = np.arange(points.shape[0]).reshape(side, side)[::step, ::step].ravel()
    ax.quiver(points[grid, 0], points[grid, 1], unit[grid, 0], unit[grid, 1], color="white", width=0.004)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_curves(path: str, curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str = "") -> str:
    """One panel per named curve of (steps, values)."""
    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        steps, values = curves[name]
        ax.plot(steps, values, lw=1)
        ax.set_xlabel("step")
        ax.set_title(name)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_panels(path: str, panels: Mapping[str, np.ndarray], extent: tuple[float, float, float, float]) -> str:
    """Several densities (each [H, W] log-density) side by side, e.g. one per objective."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, log_density) in zip(axes[0], panels.items()):
        ax.imshow(np.exp(log_density - log_density.max()), origin="lower", cmap="magma", extent=extent)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


_CLASS_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                  "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def _scatter_classes(ax, points: np.ndarray, labels: np.ndarray, alpha: float) -> None:
    for label in np.unique(labels):
        rows = points[labels == label]
        ax.scatter(rows[:, 0], rows[:, 1], s=1, alpha=alpha,
                   c=_CLASS_COLOURS[int(label) % len(_CLASS_COLOURS)], label=f"class {label}")


def plot_class_samples(path: str, data: np.ndarray, data_labels: np.ndarray, samples: np.ndarray,
                       labels: np.ndarray, title: str = "") -> str:
    """Conditional samples coloured by their class, next to the labelled training data."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    for ax, (name, x, y) in zip(axes, (("data", data, data_labels), ("samples", samples, labels))):
        _scatter_classes(ax, x, y, 0.5)
        ax.set_aspect("equal")
        ax.set_title(f"{title} {name}".strip())
    return save_figure(fig, path)


def plot_conditional(path: str, points: np.ndarray, fields: Mapping[int, tuple[np.ndarray, np.ndarray]],
                     data: np.ndarray, data_labels: np.ndarray, samples: np.ndarray,
                     labels: np.ndarray, title: str = "") -> str:
    """Per class: the model's posterior score field (black) and the oracle's (red) on a grid
    ``points`` [G², 2] over the class's data, then the class's samples over its data."""
    classes = sorted(fields)
    fig, axes = plt.subplots(2, len(classes), figsize=(4.6 * len(classes), 6.4), squeeze=False)
    for column, label in enumerate(classes):
        model, oracle = fields[label]
        ax = axes[0, column]
        ax.scatter(*data[data_labels == label].T, s=1, c="0.7")
        for field, colour in ((oracle, "tab:red"), (model, "black")):
            unit = field / np.maximum(np.linalg.norm(field, axis=1, keepdims=True), 1e-12)
            ax.quiver(points[:, 0], points[:, 1], unit[:, 0], unit[:, 1], color=colour,
                      width=0.003, alpha=0.8)
        ax.set_title(f"{title}: posterior score, class {label}")
        ax = axes[1, column]
        ax.scatter(*data[data_labels == label].T, s=1, c="0.7")
        ax.scatter(*samples[labels == label].T, s=1, alpha=0.5,
                   c=_CLASS_COLOURS[label % len(_CLASS_COLOURS)])
        ax.set_title(f"samples of class {label}")
        for ax in axes[:, column]:
            ax.set_aspect("equal")
    return save_figure(fig, path)
