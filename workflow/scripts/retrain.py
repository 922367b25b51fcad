"""Rule `retrain`: fresh models trained on the top-k and the bottom-k masked copies of one mask
pair, one per retrain seed of the job (one seed, or all of them with `retraining.group_seeds`)."""

from diffroar.worker import call


def as_list(paths):
    return [paths] if isinstance(paths, str) else list(paths)


orders = list(snakemake.params.orders)
call(
    snakemake,
    "diffroar.retrain:run_retrain",
    {order: snakemake.input[order] for order in orders},
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
    base_model_cfg=snakemake.params.base_model,
    model_cfg=snakemake.params.model,
    retraining_cfg=snakemake.params.retraining,
    retrain_seeds=snakemake.params.seeds,
    config_fingerprints=snakemake.params.fingerprints,
    attribution_fingerprint=snakemake.params.attribution_fingerprint,
    expected=snakemake.params.identity,
)
