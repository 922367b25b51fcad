"""Rule `localization`: attribution mass on the signal and null blocks of one dataset."""

from diffroar.localization import run_localization
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_localization(
    snakemake.input.dataset,
    list(snakemake.input.saliency),
    snakemake.output[0],
    keep_fractions=snakemake.params.keep_fractions,
    tiebreak_seed=snakemake.params.tiebreak_seed,
    ranking=snakemake.params.ranking,
    expected=snakemake.params.identity,
)
