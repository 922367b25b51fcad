"""Rule `saliency`: attributions of one base model with one method."""

from diffroar.runtime import setup_job
from diffroar.saliency import run_saliency

setup_job(snakemake.log[0], snakemake.threads)
run_saliency(
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    snakemake.output[0],
    method=snakemake.wildcards.method,
    settings=snakemake.params.settings,
    expected_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
