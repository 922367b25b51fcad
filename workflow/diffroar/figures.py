"""Stage `figures`: DiffROAR curves per method and per imputation, retrain vs retrain-free
curves, attribution galleries, BlockMNIST localization and the parameter-randomisation check."""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .checks import expect_inputs, read_table  # noqa: E402
from .imputation import MASK_ONLY  # noqa: E402
from .metrics import noretrain_diffroar  # noqa: E402
from .runtime import atomic_output, log  # noqa: E402
from .store import open_store  # noqa: E402

LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h"]


def _colours(names: list[str]) -> dict[str, tuple]:
    """A colour per name (tab10, then tab20 beyond ten names)."""
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _styles(models: list[str], methods: list[str]) -> dict[tuple[str, str], dict]:
    """A colour per method and a line style per model."""
    colours = _colours(methods)
    return {
        (model, method): {"color": colours[method], "linestyle": LINESTYLES[i % len(LINESTYLES)]}
        for i, model in enumerate(models)
        for method in methods
    }


def _panels(count: int, width: float = 4.2, height: float = 3.4):
    """A figure with `count` panels in rows of at most four, sharing both axes."""
    columns = min(count, 4)
    rows = -(-count // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), sharex=True, sharey=True,
        squeeze=False,
    )  # fmt: skip
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return figure, list(axes.flat[:count])


def _curve(axis, rows: pd.DataFrame, label: str, style: dict, value: str = "diffroar") -> None:
    """One line vs k with its 95% interval band when the table has one."""
    axis.plot(rows["keep_fraction"], rows[value], label=label, **style)
    if value == "diffroar" and rows["ci_low"].notna().any():
        axis.fill_between(
            rows["keep_fraction"], rows["ci_low"], rows["ci_high"], color=style["color"], alpha=0.12
        )


def _finish(axes: list, title: str, ylabel: str = "DiffROAR") -> None:
    for axis in axes:
        axis.axhline(0, color="black", linewidth=0.8)
        axis.grid(alpha=0.3)
        axis.set_xlabel("k (fraction kept)")
    axes[0].set_ylabel(ylabel)
    axes[0].figure.suptitle(title, fontsize="medium")


def plot_methods(table_path: str, out_path: str, dataset: str, imputations: list[str]) -> None:
    """DiffROAR vs k: a row of panels per imputation of `imputations`, a panel per model, a line
    per method with its 95% band; where the table has the mask-only control, each method's
    mask-only DiffROAR is drawn dashed in the same colour, so the gap between the two is what the
    kept values add beyond the mask's shape."""
    table = read_table(table_path).sort_values("keep_fraction")
    control = table[table["imputation"] == MASK_ONLY]
    table = table[table["imputation"].isin(imputations)]
    methods = sorted(table["method"].unique())
    colours = _colours(methods)
    models = sorted(table["model"].unique())
    figure, grid = plt.subplots(
        len(imputations), len(models), figsize=(4.2 * len(models), 3.4 * len(imputations)),
        sharex=True, sharey=True, squeeze=False,
    )  # fmt: skip
    for row, imputation in zip(grid, imputations, strict=True):
        for axis, model in zip(row, models, strict=True):
            for i, method in enumerate(methods):
                rows = table[
                    (table["model"] == model)
                    & (table["method"] == method)
                    & (table["imputation"] == imputation)
                ]
                style = {"color": colours[method], "marker": MARKERS[i % len(MARKERS)]}
                _curve(axis, rows, method, style)
                alone = control[(control["model"] == model) & (control["method"] == method)]
                if len(alone):
                    axis.plot(
                        alone["keep_fraction"],
                        alone["diffroar"],
                        color=colours[method],
                        linestyle="--",
                        linewidth=1,
                        label=f"{method}: mask only",
                    )
            axis.set_title(f"{model}, {imputation}", fontsize="small")
    axes = list(grid.flat)
    axes[-1].legend(fontsize="x-small", ncol=2)
    intervals = ", ".join(
        sorted({over.replace("_", " ") for over in table.get("interval_over", [])})
    )
    runs = int(table["n_runs"].min()) if len(table) else 0
    _finish(
        axes,
        f"DiffROAR = acc(top-k) − acc(bottom-k) on {dataset}; dashed: the same masks with no "
        f"pixel values (mask only)\n(bands: 95% intervals over {intervals or 'runs'}; "
        f"at least {runs} runs each)",
    )
    for axis in grid[:-1].flat:
        axis.set_xlabel("")
    _save(figure, out_path)


def plot_imputation(table_path: str, out_path: str, dataset: str) -> None:
    """DiffROAR vs k: a panel per method, a colour per imputation, a line style per model."""
    table = read_table(table_path).sort_values("keep_fraction")
    methods = sorted(table["method"].unique())
    imputations = sorted(table["imputation"].unique())
    models = sorted(table["model"].unique())
    colours = _colours(imputations)
    figure, axes = _panels(len(methods))
    for axis, method in zip(axes, methods, strict=True):
        for imputation in imputations:
            for j, model in enumerate(models):
                rows = table[
                    (table["method"] == method)
                    & (table["imputation"] == imputation)
                    & (table["model"] == model)
                ]
                style = {
                    "color": colours[imputation],
                    "linestyle": LINESTYLES[j % len(LINESTYLES)],
                    "marker": "o",
                }
                _curve(axis, rows, f"{imputation} · {model}", style)
        axis.set_title(method, fontsize="small")
    axes[-1].legend(fontsize="x-small")
    _finish(axes, f"Effect of the imputation on DiffROAR, {dataset} (colour: imputation)")
    _save(figure, out_path)


def plot_noretrain(
    diffroar_path: str, noretrain_paths: list[str], out_path: str, dataset: str, imputation: str
) -> None:
    """A panel per method: retrain DiffROAR (solid) beside the retrain-free LeRF − MoRF accuracy
    of the unchanged base model (dashed) vs k, a colour per model, with `imputation`."""
    retrain = read_table(diffroar_path).sort_values("keep_fraction")
    retrain = retrain[retrain["imputation"] == imputation]
    free = noretrain_diffroar(pd.concat([read_table(path) for path in noretrain_paths]))
    free = free[free["imputation"] == imputation].sort_values("keep_fraction")
    methods = sorted(retrain["method"].unique())
    models = sorted(retrain["model"].unique())
    colours = _colours(models)
    figure, axes = _panels(len(methods))
    for axis, method in zip(axes, methods, strict=True):
        for model in models:
            pick = (retrain["method"] == method) & (retrain["model"] == model)
            style = {"color": colours[model], "marker": "o"}
            _curve(axis, retrain[pick], f"{model} retrained", style)
            pick = (free["method"] == method) & (free["model"] == model)
            style = {"color": colours[model], "marker": "x", "linestyle": "--"}
            _curve(axis, free[pick], f"{model} no retraining", style, "noretrain_diffroar")
        axis.set_title(method, fontsize="small")
    axes[-1].legend(fontsize="x-small")
    _finish(
        axes,
        f"With and without retraining on {dataset}, {imputation} imputation: acc(top-k kept) − "
        "acc(bottom-k kept)",
        "accuracy difference",
    )
    _save(figure, out_path)


def plot_attributions(
    dataset_path: str,
    saliency_paths: list[str],
    out_path: str,
    n_images: int,
    expected: dict[str, dict] | None = None,
) -> None:
    """A row per test image x model: the image, then the |attribution| map (summed over channels)
    of every method; images chosen round-robin over classes. With `expected` (input path -> the
    identity the rule expects), a store that records another is refused."""
    expect_inputs(expected, [dataset_path, *saliency_paths])
    dataset = open_store(dataset_path)
    labels = dataset["test"]["labels"][...]
    classes = dataset.attrs["classes"]
    by_class = [np.flatnonzero(labels == c) for c in range(len(classes))]
    round_robin = [i for row in zip_longest(*by_class) for i in row if i is not None]
    picks = [int(i) for i in round_robin[:n_images]]
    images = (
        dataset["test"]["images"].get_orthogonal_selection((picks,)) / dataset.attrs["pixel_max"]
    )
    stores = [open_store(path) for path in saliency_paths]
    models = list(dict.fromkeys(store.attrs["model"] for store in stores))
    methods = list(dict.fromkeys(store.attrs["method"] for store in stores))
    by_key = {(store.attrs["model"], store.attrs["method"]): store for store in stores}
    rows, columns = len(picks) * len(models), 1 + len(methods)
    aspect = images.shape[2] / images.shape[3]
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(1.3 * columns, 1.3 * rows * aspect + 0.6),
        squeeze=False,
        layout="constrained",  # keeps the two-line title clear of the column titles
    )
    for number, index in enumerate(picks):
        image = images[number].transpose(1, 2, 0)
        for offset, model in enumerate(models):
            row = axes[number * len(models) + offset]
            row[0].imshow(
                image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1
            )
            row[0].set_ylabel(f"class {classes[labels[index]]}\n{model}", fontsize="x-small")
            for column, method in enumerate(methods, start=1):
                values = np.abs(by_key[(model, method)]["test"]["attributions"][index]).sum(0)
                row[column].imshow(values, cmap="inferno", vmin=0, vmax=values.max() or 1)
    for column, method in enumerate(methods, start=1):
        axes[0, column].set_title(method, fontsize="x-small")
    axes[0, 0].set_title("input", fontsize="x-small")
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(
        f"|attribution| on test images of {dataset.attrs['dataset']}\n(each map scaled to its max)",
        fontsize="small",
    )
    _save(figure, out_path)


def plot_localization(table_path: str, out_path: str, dataset: str) -> None:
    """Left: share of attribution mass on the signal block per model x method (bars, 95%
    interval). Right: share of the top-k attributed coordinates in the null block vs k."""
    table = read_table(table_path)
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
    figure.suptitle(
        f"Localization on {dataset} test images, base seed {table['base_seed'].min()} (bars and "
        "bands: 95% intervals over the test images of one base model)"
    )
    _save(figure, out_path)


def plot_sanity(table_paths: list[str], out_path: str, dataset: str) -> None:
    """The model-parameter randomisation check (diffroar.sanity) of the first base seed: a panel
    per model (column) and mode (row: cascading, independent), the Spearman correlation of each
    method's maps with the trained model's against the layer reached from the output (0: the
    trained model with fresh draws), |A| solid with its 95% band over images, signed dashed."""
    table = pd.concat([read_table(path, "sanity") for path in table_paths], ignore_index=True)
    table = table[table["base_seed"] == table["base_seed"].min()]
    models, methods = sorted(table["model"].unique()), sorted(table["method"].unique())
    colours, modes = _colours(methods), ["cascading", "independent"]
    figure, grid = plt.subplots(
        len(modes), len(models), figsize=(max(6.4, 0.45 * table["layers"].max() + 2.4)
                                          * len(models), 3.8 * len(modes)),
        sharey=True, squeeze=False, layout="constrained",
    )  # fmt: skip
    for column, model in enumerate(models):
        mine = table[table["model"] == model]
        steps = mine[["layer_from_output", "layer", "layer_type"]].drop_duplicates()
        steps = steps.sort_values("layer_from_output")
        labels = [
            "trained" if step == 0 else f"{layer.removeprefix('network.')}\n{kind}"
            for step, layer, kind in steps.itertuples(index=False)
        ]
        for row, mode in enumerate(modes):
            axis = grid[row, column]
            rows = mine[mine["mode"].isin(["trained", mode])].sort_values("layer_from_output")
            for method in methods:
                for measure, linestyle in (("spearman_abs", "-"), ("spearman_signed", "--")):
                    line = rows[(rows["method"] == method) & (rows["measure"] == measure)]
                    axis.plot(
                        line["layer_from_output"], line["mean"], color=colours[method],
                        linestyle=linestyle, marker="o" if linestyle == "-" else None,
                        label=method if linestyle == "-" else None,
                    )  # fmt: skip
                    if linestyle == "-" and line["ci_low"].notna().any():
                        axis.fill_between(
                            line["layer_from_output"], line["ci_low"], line["ci_high"],
                            color=colours[method], alpha=0.12,
                        )  # fmt: skip
            axis.set_xticks(steps["layer_from_output"], labels, fontsize="x-small", rotation=45)
            axis.axhline(0, color="black", linewidth=0.8)
            axis.grid(alpha=0.3)
            axis.set_ylim(-1.05, 1.05)
            reach = (
                "layers re-initialised from the output down to"
                if mode == "cascading"
                else ("the one layer re-initialised")
            )
            axis.set_title(f"{model}, {mode}", fontsize="small")
            axis.set_xlabel(reach, fontsize="small")
    handles, labels = grid[0, 0].get_legend_handles_labels()
    columns = min(len(methods), 3 * len(models))  # what fits under the panels
    figure.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize="small")
    for axis in grid[:, 0]:
        axis.set_ylabel("Spearman ρ with the trained model")
    images = int(table["n_images"].max()) if len(table) else 0
    figure.suptitle(
        f"Model-parameter randomisation on {dataset}, base seed {table['base_seed'].min()}\n"
        f"solid: |attribution|, dashed: signed (bands: 95% intervals over {images} test "
        "images)\nstochastic methods draw afresh for every model",
        fontsize="medium",
    )
    _save(figure, out_path)


def _save(figure, out_path: str) -> None:
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    with atomic_output(out_path) as temporary:
        figure.savefig(temporary, dpi=120, format=Path(out_path).suffix.lstrip(".") or "png")
    plt.close(figure)
    log.info("wrote %s", out_path)


def plot_ranking(runs_path: str, out_path: str, dataset: str, keep_fractions: list[float]) -> None:
    """The methods ranked by their DiffROAR area over k (diffroar.compare.ranking_table) from a
    run table: a panel per imputation, a row per method (largest mean area over the models on
    top), a horizontal 95% interval bar per model (colour)."""
    from .compare import ranking_table  # here, not on top: the other figures do not need it

    table = ranking_table(read_table(runs_path), keep_fractions)
    # the mask-only control last, beside the imputations it is the control of
    imputations = sorted(table["imputation"].unique(), key=lambda name: (name == "mask_only", name))
    models = sorted(table["model"].unique())
    colours = _colours(models)
    height = 1.6 + 0.5 * table["method"].nunique()
    figure, axes = plt.subplots(
        1,
        len(imputations),
        figsize=(max(6.0, 4.6 * len(imputations)), height),
        sharex=True,
        squeeze=False,
    )
    for axis, imputation in zip(axes.flat, imputations, strict=True):
        rows = table[table["imputation"] == imputation]
        methods = list(rows.groupby("method")["area"].mean().sort_values().index)
        for j, model in enumerate(models):
            mine = rows[rows["model"] == model].set_index("method").reindex(methods)
            offset = (j - (len(models) - 1) / 2) * 0.8 / max(len(models), 1)
            errors = [
                (mine["area"] - mine["ci_low"]).fillna(0).to_numpy(),
                (mine["ci_high"] - mine["area"]).fillna(0).to_numpy(),
            ]
            axis.errorbar(
                mine["area"], np.arange(len(methods)) + offset, xerr=errors, fmt="o",
                color=colours[model], capsize=3, label=model,
            )  # fmt: skip
        axis.set_yticks(range(len(methods)), methods, fontsize="small")
        axis.axvline(0, color="black", linewidth=0.8)
        axis.grid(alpha=0.3, axis="x")
        over = ", ".join(sorted({over.replace("_", " ") for over in rows["interval_over"]}))
        axis.set_title(f"{imputation} (intervals over {over})", fontsize="small")
        axis.set_xlabel("DiffROAR area over k (normalised)")
    axes.flat[-1].legend(fontsize="x-small")
    figure.suptitle(
        f"Methods ranked by DiffROAR area over k on {dataset}\n(bars: 95% intervals)",
        fontsize="medium",
    )
    _save(figure, out_path)
