rule sanity:
    input:
        dataset=DATA,
        checkpoint=f"{MODEL_DIR}/model.safetensors",
    output:
        SANITY,
    log:
        "results/logs/sanity/{dataset}/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/sanity/{dataset}/{model}/seed{seed}.tsv"
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("sanity", 2)
    resources:
        **rule_resources("sanity"),
    params:
        **job_params(
            runtime_settings=BATCH_SIZES,
            methods=sanity_methods,
            sanity=config["sanity"],
            model=base_model,
            fingerprint=train_fingerprint,
            identity=expected_inputs("data", "checkpoint"),
            code=code_fingerprint("sanity"),
        ),
    shell:
        job_shell("sanity.py")
