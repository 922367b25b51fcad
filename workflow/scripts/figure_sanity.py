"""Rule `figure_sanity`: the randomisation check's correlations for one dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.figures:plot_sanity",
    list(snakemake.input),
    snakemake.output[0],
    snakemake.wildcards.dataset,
)
