"""Rule `figure_noretrain`: retrain DiffROAR beside the retrain-free curve for one dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.figures:plot_noretrain",
    snakemake.input.diffroar,
    list(snakemake.input.noretrain),
    snakemake.output[0],
    snakemake.wildcards.dataset,
    snakemake.params.imputation,
)
