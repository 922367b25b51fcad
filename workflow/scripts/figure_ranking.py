"""Rule `figure_ranking`: the methods of one dataset ranked by DiffROAR area over k."""

from diffroar.figures import plot_ranking
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plot_ranking(
    snakemake.input[0],
    snakemake.output[0],
    snakemake.wildcards.dataset,
    list(snakemake.params.keep_fractions),
)
