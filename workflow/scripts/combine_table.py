"""Rule `combine_table`: stack the per-dataset tables of one kind."""

from diffroar.worker import call

call(snakemake, "diffroar.metrics:concatenate", list(snakemake.input), snakemake.output[0])
