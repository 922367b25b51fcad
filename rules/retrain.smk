RETRAIN_LOG = "results/logs/retrain/{dataset}/{model}/seed{seed}/{method}/{imputation}/{order}-k{k}"
RETRAIN_BENCHMARK = "results/benchmarks/retrain/{dataset}/{model}/seed{seed}/{method}/{imputation}/{order}-k{k}"

if config["retraining"]["group_seeds"]:

    # One job per masked dataset trains every retrain seed, one after another.
    rule retrain:
        input:
            masked=MASKED,
        output:
            checkpoint=expand(
                f"{RETRAIN_DIR}/model.safetensors",
                rseed=EXPERIMENT["retrain_seeds"],
                allow_missing=True,
            ),
            metrics=expand(
                f"{RETRAIN_DIR}/metrics.json",
                rseed=EXPERIMENT["retrain_seeds"],
                allow_missing=True,
            ),
        log:
            f"{RETRAIN_LOG}/retrain-seeds.log",
        benchmark:
            f"{RETRAIN_BENCHMARK}/retrain-seeds.tsv"
        conda:
            "../envs/diffroar.yaml"
        threads: rule_threads("retrain")
        resources:
            **rule_resources("retrain"),
        params:
            base_model=base_model,
            model=retrain_model,
            retraining=retraining_settings(),
            seeds=job_retrain_seeds,
            fingerprints=retrain_fingerprints,
            attribution_fingerprint=attribution_fingerprint,
            identity=expected_inputs("masked"),
            code=code_fingerprint("retrain"),
        script:
            "../workflow/scripts/retrain.py"

else:

    rule retrain:
        input:
            masked=MASKED,
        output:
            checkpoint=f"{RETRAIN_DIR}/model.safetensors",
            metrics=f"{RETRAIN_DIR}/metrics.json",
        log:
            f"{RETRAIN_LOG}/retrain{{rseed}}.log",
        benchmark:
            f"{RETRAIN_BENCHMARK}/retrain{{rseed}}.tsv"
        conda:
            "../envs/diffroar.yaml"
        threads: rule_threads("retrain")
        resources:
            **rule_resources("retrain"),
        params:
            base_model=base_model,
            model=retrain_model,
            retraining=retraining_settings(),
            seeds=job_retrain_seeds,
            fingerprints=retrain_fingerprints,
            attribution_fingerprint=attribution_fingerprint,
            identity=expected_inputs("masked"),
            code=code_fingerprint("retrain"),
        script:
            "../workflow/scripts/retrain.py"
