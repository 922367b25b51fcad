rule saliency:
    input:
        dataset=DATA,
        checkpoint=f"{MODEL_DIR}/model.safetensors",
    output:
        directory(SALIENCY),
    log:
        "results/logs/saliency/{dataset}/{model}/seed{seed}/{method}.log",
    benchmark:
        "results/benchmarks/saliency/{dataset}/{model}/seed{seed}/{method}.tsv"
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("saliency", 2)
    resources:
        **rule_resources("saliency"),
    params:
        **job_params(
            runtime_settings=BATCH_SIZES,
            settings=attribution_settings,
            fingerprint=train_fingerprint,
            identity=expected_inputs("data", "checkpoint"),
            code=code_fingerprint("saliency"),
        ),
    shell:
        job_shell("saliency.py")
