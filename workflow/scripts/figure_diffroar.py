"""Rule `figure_diffroar`: DiffROAR vs k for one dataset."""

from diffroar.figures import plot_diffroar
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plot_diffroar(snakemake.input[0], snakemake.output[0], snakemake.wildcards.dataset)
