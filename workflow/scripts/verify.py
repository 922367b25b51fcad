"""Rule `verify`: check every artifact of the run against what the config promises."""

from diffroar.worker import call

call(snakemake, "diffroar.verify:run_verify", "results", snakemake.params.expected)
