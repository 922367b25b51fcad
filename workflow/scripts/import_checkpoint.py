"""Rule `import_checkpoint`: make a base model's checkpoint from the user's trained weights."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.import_checkpoint:run_import",
    snakemake.input.dataset,
    snakemake.runtime_settings["checkpoint"],
    snakemake.output.checkpoint,
    snakemake.output.metrics,
    dataset=snakemake.wildcards.dataset,
    model_name=snakemake.wildcards.model,
    model_cfg=snakemake.params.model,
    seed=int(snakemake.wildcards.seed),
    config_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
