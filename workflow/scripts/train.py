"""Rule `train`: train one base model."""

from diffroar.runtime import setup_job
from diffroar.train import run_train

setup_job(snakemake.log[0], snakemake.threads)
run_train(
    snakemake.input.dataset,
    snakemake.output.checkpoint,
    snakemake.output.metrics,
    dataset=snakemake.wildcards.dataset,
    model_name=snakemake.wildcards.model,
    model_cfg=snakemake.params.model,
    training_cfg=snakemake.params.training,
    seed=int(snakemake.wildcards.seed),
    config_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
