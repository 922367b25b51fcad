"""Rule `figure_imputation`: the effect of the imputation on DiffROAR for one dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.figures:plot_imputation",
    snakemake.input[0],
    snakemake.output[0],
    snakemake.wildcards.dataset,
)
