rule retrain:
    input:
        masked=MASKED,
    output:
        checkpoint=f"{RETRAIN_DIR}/model.safetensors",
        metrics=f"{RETRAIN_DIR}/metrics.json",
    log:
        "results/logs/retrain/{dataset}/{model}/seed{seed}/{method}/{order}-k{k}/retrain{rseed}.log",
    benchmark:
        "results/benchmarks/retrain/{dataset}/{model}/seed{seed}/{method}/{order}-k{k}/retrain{rseed}.tsv"
    conda:
        "../envs/diffroar.yaml"
    params:
        model=lambda wildcards: config["models"][wildcards.model],
        retraining=config["retraining"],
        fingerprint=retrain_fingerprint,
        code=code_fingerprint("retrain"),
    script:
        "../workflow/scripts/retrain.py"
