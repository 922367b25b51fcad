"""Rule `metrics`: run table and DiffROAR table of one dataset."""

from diffroar.metrics import run_metrics
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_metrics(
    list(snakemake.input),
    snakemake.output.runs,
    snakemake.output.diffroar,
    expected=snakemake.params.identities,
)
