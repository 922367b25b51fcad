"""Rule `sanity`: the model-parameter randomisation check of one base model, every method."""

from diffroar.worker import call

call(
    snakemake,
    "diffroar.sanity:run_sanity",
    snakemake.input.dataset,
    snakemake.input.checkpoint,
    snakemake.output[0],
    methods=snakemake.params.methods,
    sanity=snakemake.params.sanity,
    # the batch sizes change no attribution: runtime settings, not params
    batch=snakemake.runtime_settings,
    model_cfg=snakemake.params.model,
    checkpoint_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
