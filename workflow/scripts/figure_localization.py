"""Rule `figure_localization`: localization on one BlockMNIST-style dataset."""

from diffroar.figures import plot_localization
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plot_localization(snakemake.input[0], snakemake.output[0], snakemake.wildcards.dataset)
