"""Rule `retrain`: the top-k and the bottom-k masked copies of one mask pair, made in memory from
the dataset and the attributions, and fresh models trained on each, one per retrain seed of the
job (one seed, or all of them with `retraining.group_seeds`)."""

from diffroar.worker import call


def as_list(paths):
    return [paths] if isinstance(paths, str) else list(paths)


orders = list(snakemake.params.orders)
call(
    snakemake,
    "diffroar.retrain:run_retrain",
    snakemake.input.dataset,
    snakemake.input.saliency,
    {
        order: list(
            zip(
                as_list(snakemake.output[f"{order}_model"]),
                as_list(snakemake.output[f"{order}_metrics"]),
                strict=True,
            )
        )
        for order in orders
    },
    keep_fraction=float(snakemake.wildcards.k),
    imputation=snakemake.wildcards.imputation,
    masking_cfg=snakemake.params.masking,
    base_model_cfg=snakemake.params.base_model,
    model_cfg=snakemake.params.model,
    retraining_cfg=snakemake.params.retraining,
    retrain_seeds=snakemake.params.seeds,
    config_fingerprints=snakemake.params.fingerprints,
    attribution_fingerprint=snakemake.params.attribution_fingerprint,
    expected=snakemake.params.identity,
)
