"""Rule `figure_attributions`: the attribution gallery of one dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.figures:plot_attributions",
    snakemake.input.dataset,
    list(snakemake.input.saliency),
    snakemake.output[0],
    snakemake.params.images,
    expected=snakemake.params.identity,
)
