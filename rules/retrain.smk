# One job per mask pair (top-k and bottom-k of one method, imputation and k) retrains both orders:
# DiffROAR needs both, and one job halves the start-ups. With `retraining.group_seeds` it trains
# every retrain seed too, else one job per retrain seed.
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
        **{order: of_order(MASKED, order) for order in ORDERS},
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
            base_model=base_model,
            model=retrain_model,
            retraining=retraining_settings(),
            seeds=job_retrain_seeds,
            fingerprints=retrain_fingerprints,
            attribution_fingerprint=attribution_fingerprint,
            identity=masked_pair_identities,
            code=code_fingerprint("retrain"),
        ),
    shell:
        job_shell("retrain.py")
