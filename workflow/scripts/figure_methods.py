"""Rule `figure_methods`: DiffROAR vs k per method, a panel per model and imputation, with the
mask-only control, for one dataset."""

from diffroar.figures import plot_methods
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plot_methods(
    snakemake.input[0],
    snakemake.output[0],
    snakemake.wildcards.dataset,
    list(snakemake.params.imputations),
)
