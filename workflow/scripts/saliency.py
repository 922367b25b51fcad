"""Rule `saliency`: attributions of one base model with one method."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.saliency:run_saliency",
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    snakemake.output[0],
    method=snakemake.wildcards.method,
    # the batch sizes change no attribution, so they come from the config, not the params
    settings=snakemake.params.settings
    | {key: snakemake.config["saliency"][key] for key in ("batch_size", "internal_batch_size")},
    expected_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
