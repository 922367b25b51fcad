"""Rule `combine_table`: stack the per-dataset tables of one kind."""

from diffroar.metrics import concatenate
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
concatenate(list(snakemake.input), snakemake.output[0])
