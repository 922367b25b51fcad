"""Rule `saliency`: attributions of one base model with one method."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.saliency:run_saliency",
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    snakemake.output[0],
    method=snakemake.wildcards.method,
    settings=snakemake.params.settings,
    expected_fingerprint=snakemake.params.fingerprint,
)
