"""Rule `noretrain`: one base model's accuracy on all its masked test sets."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.noretrain:run_noretrain",
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    list(snakemake.input.masked),
    snakemake.output[0],
    model_cfg=snakemake.params.model,
    config_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
