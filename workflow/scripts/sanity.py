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
    # the batch sizes change no attribution, so they come from the config, not the params
    batch={key: snakemake.config["saliency"][key] for key in ("batch_size", "internal_batch_size")},
    model_cfg=snakemake.params.model,
    checkpoint_fingerprint=snakemake.params.fingerprint,
    expected=snakemake.params.identity,
)
