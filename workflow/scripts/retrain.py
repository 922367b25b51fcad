"""Rule `retrain`: fresh models trained on one masked dataset, one per retrain seed of the job
(one seed, or all of them with `retraining.group_seeds`)."""

from diffroar.retrain import run_retrain
from diffroar.runtime import setup_job


def as_list(paths):
    return [paths] if isinstance(paths, str) else list(paths)


setup_job(snakemake.log[0], snakemake.threads)
run_retrain(
    snakemake.input.masked,
    list(zip(as_list(snakemake.output.checkpoint), as_list(snakemake.output.metrics), strict=True)),
    base_model_cfg=snakemake.params.base_model,
    model_cfg=snakemake.params.model,
    retraining_cfg=snakemake.params.retraining,
    retrain_seeds=snakemake.params.seeds,
    config_fingerprints=snakemake.params.fingerprints,
    attribution_fingerprint=snakemake.params.attribution_fingerprint,
    expected=snakemake.params.identity,
)
