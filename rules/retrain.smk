rule retrain:
    input:
        masked=MASKED,
    output:
        checkpoint=f"{RETRAIN_DIR}/model.safetensors",
        metrics=f"{RETRAIN_DIR}/metrics.json",
    log:
        "results/logs/retrain/{dataset}/{model}/seed{seed}/{method}/{imputation}/{order}-k{k}/retrain{rseed}.log",
    benchmark:
        "results/benchmarks/retrain/{dataset}/{model}/seed{seed}/{method}/{imputation}/{order}-k{k}/retrain{rseed}.tsv"
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("retrain")
    resources:
        **rule_resources("retrain"),
    params:
        base_model=base_model,
        model=retrain_model,
        retraining=retraining_settings(),
        fingerprint=retrain_fingerprint,
        code=code_fingerprint("retrain"),
    script:
        "../workflow/scripts/retrain.py"
