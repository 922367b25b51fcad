"""Rule `figure_attributions`: the attribution gallery of one dataset."""

from diffroar.figures import plot_attributions
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
plot_attributions(
    snakemake.input.dataset,
    list(snakemake.input.saliency),
    snakemake.output[0],
    snakemake.params.images,
)
