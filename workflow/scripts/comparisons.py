"""Rule `comparisons`: paired comparisons of the methods of one dataset."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.compare:run_comparisons",
    snakemake.input[0],
    list(snakemake.params.keep_fractions),
    snakemake.output[0],
)
