"""Rule `mask`: the top-k and bottom-k masked copies of a dataset (one method, imputation and k)."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.mask:run_mask",
    snakemake.input.dataset,
    snakemake.input.saliency,
    {order: snakemake.output[order] for order in ("top", "bottom")},
    keep_fraction=float(snakemake.wildcards.k),
    imputation=snakemake.wildcards.imputation,
    **snakemake.params.settings,
    expected=snakemake.params.identity,
)
