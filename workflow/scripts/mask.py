"""Rule `mask`: one masked copy of a dataset (one method, k and order)."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.mask:run_mask",
    snakemake.input.dataset,
    snakemake.input.saliency,
    snakemake.output[0],
    keep_fraction=float(snakemake.wildcards.k),
    order=snakemake.wildcards.order,
    imputation=snakemake.wildcards.imputation,
    **snakemake.params.settings,
)
