"""Rule `data`: prepare one dataset store."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.data:prepare",
    snakemake.wildcards.dataset,
    snakemake.params.dataset,
    snakemake.output[0],
)
