"""Rule `metrics`: run table and DiffROAR table of one dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.metrics:run_metrics",
    list(snakemake.input),
    snakemake.output.runs,
    snakemake.output.diffroar,
    expected=snakemake.params.identities,
)
