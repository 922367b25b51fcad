rule robust:
    input:
        dataset=DATA,
        checkpoint=f"{MODEL_DIR}/model.safetensors",
    output:
        f"{MODEL_DIR}/robust.json",
    log:
        f"results/logs/robust/{{dataset}}/{{model}}/seed{{seed}}.log",
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("robust")
    resources:
        **rule_resources("robust"),
    params:
        **job_params(
            model=base_model,
            eval_attack=config["training"]["eval_attack"],
            fingerprint=train_fingerprint,
            identity=expected_inputs("data", "checkpoint"),
            code=code_fingerprint("robust"),
        ),
    shell:
        job_shell("robust.py")
