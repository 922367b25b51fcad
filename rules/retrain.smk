# One job per mask pair (top-k and bottom-k of one method, imputation and k) masks the dataset in
# memory (diffroar.mask.masked_splits: the images the mask rule's stores hold, bit for bit) and
# retrains both orders: DiffROAR needs both, and one job halves the start-ups; no masked store is
# written and read back (rules/mask.smk writes them on request). With `retraining.group_seeds` it
# trains every retrain seed too, else one job per retrain seed.
RETRAIN_LOG = (
    "results/logs/retrain/{dataset}/{model}/seed{seed}/{method}/{imputation}/k{k}"
)
RETRAIN_BENCHMARK = (
    "results/benchmarks/retrain/{dataset}/{model}/seed{seed}/{method}/{imputation}/k{k}"
)
RETRAIN_JOB = (
    "retrain-seeds" if config["retraining"]["group_seeds"] else "retrain{rseed}"
)


rule retrain:
    input:
        dataset=DATA,
        saliency=SALIENCY,
    output:
        **retrain_outputs("model.safetensors"),
        **retrain_outputs("metrics.json"),
    log:
        f"{RETRAIN_LOG}/{RETRAIN_JOB}.log",
    benchmark:
        f"{RETRAIN_BENCHMARK}/{RETRAIN_JOB}.tsv"
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("retrain")
    resources:
        **rule_resources("retrain"),
    params:
        **job_params(
            orders=ORDERS,
            masking=masking_settings,
            base_model=base_model,
            model=retrain_model,
            retraining=retraining_settings(),
            seeds=job_retrain_seeds,
            fingerprints=retrain_fingerprints,
            attribution_fingerprint=attribution_fingerprint,
            identity=expected_inputs("data", "saliency"),
            code=code_fingerprint("retrain"),
        ),
    shell:
        job_shell("retrain.py")
