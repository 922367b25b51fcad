"""Rule `figure_ranking`: the methods of one dataset ranked by DiffROAR area over k."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.figures:plot_ranking",
    snakemake.input[0],
    snakemake.output[0],
    snakemake.wildcards.dataset,
    list(snakemake.params.keep_fractions),
)
