rule noretrain:
    input:
        dataset=DATA,
        checkpoint=f"{MODEL_DIR}/model.safetensors",
        masked=noretrain_masked,
    output:
        NORETRAIN,
    log:
        "results/logs/noretrain/{dataset}/{model}/seed{seed}.log",
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("noretrain")
    resources:
        **rule_resources("noretrain"),
    params:
        **job_params(
            model=base_model,
            fingerprint=train_fingerprint,
            identity=noretrain_identities,
            code=code_fingerprint("noretrain"),
        ),
    shell:
        job_shell("noretrain.py")
