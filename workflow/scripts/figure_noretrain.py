"""Rule `figure_noretrain`: retrain DiffROAR beside the retrain-free curve for one dataset."""

from diffroar.figures import plot_noretrain
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plot_noretrain(
    snakemake.input.diffroar,
    list(snakemake.input.noretrain),
    snakemake.output[0],
    snakemake.wildcards.dataset,
    snakemake.params.imputation,
)
