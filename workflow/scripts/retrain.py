"""Rule `retrain`: one fresh model trained on one masked dataset."""

from diffroar.retrain import run_retrain
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_retrain(
    snakemake.input.masked,
    snakemake.output.checkpoint,
    snakemake.output.metrics,
    base_model_cfg=snakemake.params.base_model,
    model_cfg=snakemake.params.model,
    retraining_cfg=snakemake.params.retraining,
    retrain_seed=int(snakemake.wildcards.rseed),
    config_fingerprint=snakemake.params.fingerprint,
)
