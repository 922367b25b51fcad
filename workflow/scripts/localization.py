"""Rule `localization`: attribution mass on the signal and null blocks of one dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.localization:run_localization",
    snakemake.input.dataset,
    list(snakemake.input.saliency),
    snakemake.output[0],
    keep_fractions=snakemake.params.keep_fractions,
    tiebreak_seed=snakemake.params.tiebreak_seed,
    ranking=snakemake.params.ranking,
    expected=snakemake.params.identity,
)
