# Paths, targets and per-rule params. Rules hold wiring only; the work is in workflow/diffroar.
from diffroar.config import BLOCK_LOADERS, SEEDED_METHODS, format_k
from diffroar.provenance import code_fingerprint, config_fingerprint

EXPERIMENT = config["experiment"]
ORDERS = ["top", "bottom"]


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    model=r"[A-Za-z][A-Za-z0-9_]*",
    method=r"[A-Za-z][A-Za-z0-9_]*",
    seed=r"\d+",
    rseed=r"\d+",
    order="top|bottom",
    k=r"[0-9.]+(e-?[0-9]+)?",


DATA = "results/data/{dataset}.zarr"
MODEL_DIR = "results/models/{dataset}/{model}/seed{seed}"
SALIENCY = "results/saliency/{dataset}/{model}/seed{seed}/{method}.zarr"
MASKED = "results/masked/{dataset}/{model}/seed{seed}/{method}/{order}-k{k}.zarr"
RETRAIN_DIR = (
    "results/retrain/{dataset}/{model}/seed{seed}/{method}/{order}-k{k}/retrain{rseed}"
)
TABLES = "results/tables/{dataset}"
FIGURES = "results/figures"


def block_datasets():
    """Datasets of the experiment with a signal and a null block (localization applies)."""
    return [
        name
        for name in EXPERIMENT["datasets"]
        if config["datasets"][name]["loader"] in BLOCK_LOADERS
    ]


def figure_targets():
    """Every figure of the experiment."""
    figures = expand(
        f"{FIGURES}/{{kind}}-{{dataset}}.png",
        kind=["diffroar", "attributions"],
        dataset=EXPERIMENT["datasets"],
    )
    return figures + expand(
        f"{FIGURES}/localization-{{dataset}}.png", dataset=block_datasets()
    )


def final_targets():
    tables = ["results/metrics.parquet", "results/diffroar.parquet"]
    if block_datasets():
        tables.append("results/localization.parquet")
    return tables + figure_targets()


def retrain_metrics(wildcards):
    """Metrics JSON of every retrained model of one dataset."""
    return expand(
        f"{RETRAIN_DIR}/metrics.json",
        dataset=wildcards.dataset,
        model=EXPERIMENT["models"],
        seed=EXPERIMENT["base_seeds"],
        method=EXPERIMENT["methods"],
        order=ORDERS,
        k=[format_k(k) for k in EXPERIMENT["keep_fractions"]],
        rseed=EXPERIMENT["retrain_seeds"],
    )


def gallery_saliency(wildcards):
    """Saliency stores shown in the gallery: every model x method, first base seed."""
    return expand(
        SALIENCY,
        dataset=wildcards.dataset,
        model=EXPERIMENT["models"],
        seed=EXPERIMENT["base_seeds"][0],
        method=EXPERIMENT["methods"],
    )


def localization_saliency(wildcards):
    return expand(
        SALIENCY,
        dataset=wildcards.dataset,
        model=EXPERIMENT["models"],
        seed=EXPERIMENT["base_seeds"],
        method=EXPERIMENT["methods"],
    )


def saliency_seed(wildcards):
    """The seed a method's attributions depend on (0 for deterministic methods)."""
    return config["saliency"]["seed"] if wildcards.method in SEEDED_METHODS else 0


def train_fingerprint(wildcards):
    """Fingerprint of everything in the config that a base model depends on."""
    return config_fingerprint(
        config["datasets"][wildcards.dataset],
        config["models"][wildcards.model],
        config["training"],
        int(wildcards.seed),
    )


def retrain_fingerprint(wildcards):
    """Fingerprint of everything in the config that a retrained model depends on."""
    return config_fingerprint(
        train_fingerprint(wildcards),
        wildcards.method,
        config["saliency"]["batch_size"],
        saliency_seed(wildcards),
        config["masking"],
        wildcards.order,
        wildcards.k,
        config["retraining"],
        int(wildcards.rseed),
    )
