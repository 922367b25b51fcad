"""Rule `figure_imputation`: the effect of the imputation on DiffROAR for one dataset."""

from diffroar.figures import plot_imputation
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plot_imputation(snakemake.input[0], snakemake.output[0], snakemake.wildcards.dataset)
