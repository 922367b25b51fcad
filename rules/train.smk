rule train:
    input:
        dataset=DATA,
    output:
        checkpoint=f"{MODEL_DIR}/model.safetensors",
        metrics=f"{MODEL_DIR}/metrics.json",
    log:
        f"results/logs/train/{{dataset}}/{{model}}/seed{{seed}}.log",
    benchmark:
        f"results/benchmarks/train/{{dataset}}/{{model}}/seed{{seed}}.tsv"
    wildcard_constraints:
        model=imported_models(False),
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("train", 2)
    resources:
        **rule_resources("train"),
    params:
        **job_params(
            model=base_model,
            training=training_settings(),
            fingerprint=train_fingerprint,
            identity=expected_inputs("data"),
            code=code_fingerprint("train"),
        ),
    shell:
        job_shell("train.py")
