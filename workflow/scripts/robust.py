"""Rule `robust`: the robust test accuracy of one PGD-trained base model."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.robust:run_robust",
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    snakemake.output[0],
    model_cfg=snakemake.params.model,
    eval_attack=snakemake.params.eval_attack,
    expected_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
