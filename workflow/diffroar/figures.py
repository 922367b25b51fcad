"""Stage `figures`: DiffROAR curves, attribution galleries and BlockMNIST localization."""

from __future__ import annotations

from itertools import zip_longest

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .runtime import log  # noqa: E402
from .store import open_store  # noqa: E402

LINESTYLES = ["-", "--", ":", "-."]


def _styles(models: list[str], methods: list[str]) -> dict[tuple[str, str], dict]:
    """A colour per model and a line style per method."""
    colours = plt.get_cmap("tab10").colors
    return {
        (model, method): {
            "color": colours[i % len(colours)],
            "linestyle": LINESTYLES[j % len(LINESTYLES)],
        }
        for i, model in enumerate(models)
        for j, method in enumerate(methods)
    }


def plot_diffroar(table_path: str, out_path: str, dataset: str) -> None:
    """DiffROAR vs k, a line per model x method, 95% interval bands, a zero line."""
    table = pd.read_parquet(table_path).sort_values("keep_fraction")
    styles = _styles(sorted(table["model"].unique()), sorted(table["method"].unique()))
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    axes.axhline(0, color="black", linewidth=0.8)
    for (model, method), rows in table.groupby(["model", "method"], sort=True):
        style = styles[(model, method)]
        axes.plot(
            rows["keep_fraction"],
            rows["diffroar"],
            marker="o",
            label=f"{model} · {method}",
            **style,
        )
        axes.fill_between(
            rows["keep_fraction"], rows["ci_low"], rows["ci_high"], color=style["color"], alpha=0.15
        )
    runs = int(table["n_runs"].min()) if len(table) else 0
    axes.set(
        xlabel="k (fraction of coordinates kept)",
        ylabel="DiffROAR = acc(top-k) − acc(bottom-k)",
        title=f"DiffROAR on {dataset} (bands: 95% interval over {runs} seed pairs)",
    )
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    _save(figure, out_path)


def plot_attributions(
    dataset_path: str, saliency_paths: list[str], out_path: str, n_images: int
) -> None:
    """Test images (first column) beside |attribution| maps of every model x method, one image
    per row, chosen round-robin over classes."""
    dataset = open_store(dataset_path)
    labels = dataset["test"]["labels"][...]
    classes = dataset.attrs["classes"]
    by_class = [np.flatnonzero(labels == c) for c in range(len(classes))]
    round_robin = [i for row in zip_longest(*by_class) for i in row if i is not None]
    picks = [int(i) for i in round_robin[:n_images]]
    n_images = len(picks)
    images = (
        dataset["test"]["images"].get_orthogonal_selection((picks,)) / dataset.attrs["pixel_max"]
    )
    stores = [open_store(path) for path in saliency_paths]
    columns = 1 + len(stores)
    figure, axes = plt.subplots(
        n_images,
        columns,
        figsize=(1.3 * columns, 1.3 * n_images * images.shape[2] / images.shape[3]),
        squeeze=False,
    )
    for row, index in enumerate(picks):
        image = images[row].transpose(1, 2, 0)
        axes[row, 0].imshow(
            image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1
        )
        axes[row, 0].set_ylabel(f"class {classes[labels[index]]}", fontsize="x-small")
        for column, store in enumerate(stores, start=1):
            values = np.abs(store["test"]["attributions"][index]).sum(axis=0)
            axes[row, column].imshow(values, cmap="inferno", vmin=0, vmax=values.max() or 1)
    for column, store in enumerate(stores, start=1):
        axes[0, column].set_title(
            f"{store.attrs['model']}\n{store.attrs['method']}", fontsize="x-small"
        )
    axes[0, 0].set_title("input", fontsize="x-small")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"|attribution| on test images of {dataset.attrs['dataset']}", fontsize="small")
    _save(figure, out_path)


def plot_localization(table_path: str, out_path: str, dataset: str) -> None:
    """Left: share of attribution mass on the signal block per model x method (bars, 95%
    interval). Right: share of the top-k attributed coordinates in the null block vs k."""
    table = pd.read_parquet(table_path)
    table = table[table["base_seed"] == table["base_seed"].min()]
    styles = _styles(sorted(table["model"].unique()), sorted(table["method"].unique()))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    mass = table[table["measure"] == "signal_mass_share"].sort_values(["model", "method"])
    names = [f"{m} · {a}" for m, a in zip(mass["model"], mass["method"], strict=True)]
    left.bar(
        range(len(mass)),
        mass["mean"],
        yerr=[mass["mean"] - mass["ci_low"], mass["ci_high"] - mass["mean"]],
        color=[styles[(m, a)]["color"] for m, a in zip(mass["model"], mass["method"], strict=True)],
        capsize=3,
    )
    left.axhline(0.5, color="black", linewidth=0.8, linestyle="--", label="uniform attribution")
    left.set_xticks(range(len(mass)), names, rotation=30, ha="right", fontsize="small")
    left.set(ylim=(0, 1), ylabel="share of |attribution| on the signal block")
    left.legend(fontsize="small")
    null = table[table["measure"] == "null_topk_share"].sort_values("keep_fraction")
    right.axhline(0.5, color="black", linewidth=0.8, linestyle="--", label="random ranking")
    for (model, method), rows in null.groupby(["model", "method"], sort=True):
        style = styles[(model, method)]
        right.plot(
            rows["keep_fraction"], rows["mean"], marker="o", label=f"{model} · {method}", **style
        )
        right.fill_between(
            rows["keep_fraction"], rows["ci_low"], rows["ci_high"], color=style["color"], alpha=0.15
        )
    right.set(
        xlabel="k (fraction of coordinates, top-ranked)",
        ylabel="share of top-k coordinates in the null block",
        ylim=(0, 1),
    )
    right.legend(fontsize="small")
    figure.suptitle(f"Localization on {dataset} test images (bars and bands: 95% intervals)")
    _save(figure, out_path)


def _save(figure, out_path: str) -> None:
    figure.tight_layout()
    figure.savefig(out_path, dpi=120)
    plt.close(figure)
    log.info("wrote %s", out_path)
