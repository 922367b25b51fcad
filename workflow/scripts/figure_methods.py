"""Rule `figure_methods`: DiffROAR vs k per method, a panel per model and imputation, with the
mask-only control, for one dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.figures:plot_methods",
    snakemake.input[0],
    snakemake.output[0],
    snakemake.wildcards.dataset,
    list(snakemake.params.imputations),
)
