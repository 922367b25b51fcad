"""Rule `figure_localization`: localization on one BlockMNIST-style dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.figures:plot_localization",
    snakemake.input[0],
    snakemake.output[0],
    snakemake.wildcards.dataset,
)
