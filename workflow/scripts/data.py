"""Rule `data`: prepare one dataset store."""

from diffroar.data import prepare
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
prepare(snakemake.wildcards.dataset, snakemake.params.dataset, snakemake.output[0])
