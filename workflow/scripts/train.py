"""Rule `train`: train one base model."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.train:run_train",
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
