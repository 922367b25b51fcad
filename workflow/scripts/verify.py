"""Rule `verify`: check every artifact of the run against what the config promises."""

import sys

from diffroar.runtime import log, setup_job
from diffroar.verify import report, verify_run

setup_job(snakemake.log[0], snakemake.threads)
problems, checked = verify_run("results", snakemake.params.expected)
log.info("%s", report(problems, checked, "results"))
if problems:
    sys.exit(f"verify: {len(problems)} artifacts are damaged or missing")
