"""Rule `robust`: the robust test accuracy of one PGD-trained base model."""

from diffroar.robust import run_robust
from diffroar.runtime import setup_job

setup_job(snakemake.log[0], snakemake.threads)
run_robust(
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    snakemake.output[0],
    model_cfg=snakemake.params.model,
    eval_attack=snakemake.params.eval_attack,
    expected_fingerprint=snakemake.params.fingerprint,
)
