"""Rule `saliency`: attributions of one base model with one method."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.saliency:run_saliency",
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    snakemake.output[0],
    method=snakemake.wildcards.method,
    # the batch sizes change no attribution: runtime settings, not params
    settings=snakemake.params.settings | snakemake.runtime_settings,
    expected_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
