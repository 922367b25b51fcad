"""Rule `comparisons`: paired comparisons of the methods of one dataset."""

from diffroar.compare import run_comparisons
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_comparisons(snakemake.input[0], list(snakemake.params.keep_fractions), snakemake.output[0])
