"""Rule `mask`: one masked copy of a dataset (one method, k and order)."""

from diffroar.mask import run_mask
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_mask(
    snakemake.input.dataset,
    snakemake.input.saliency,
    snakemake.output[0],
    keep_fraction=float(snakemake.wildcards.k),
    order=snakemake.wildcards.order,
    imputation=snakemake.wildcards.imputation,
    **snakemake.params.settings,
    expected=snakemake.params.identity,
)
