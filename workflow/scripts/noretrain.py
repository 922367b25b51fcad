"""Rule `noretrain`: one base model's accuracy on all its masked test sets."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.noretrain:run_noretrain",
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    list(snakemake.input.saliency),
    snakemake.output[0],
    imputations=snakemake.params.imputations,
    keep_fractions=snakemake.params.keep_fractions,
    masking_cfg=snakemake.params.masking,
    model_cfg=snakemake.params.model,
    config_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
