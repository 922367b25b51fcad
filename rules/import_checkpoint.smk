# In the train rule's place for a model with `checkpoint`: the user's weights, checked against the
# architecture and the dataset, become the same checkpoint and metrics JSON as a trained model's.
# The job reads the weights file's path from the config: neither an input nor a param, since its
# sha256 (in params.model and the fingerprint) decides what reruns; touching or moving the file
# reruns nothing, changing its bytes reruns the import and what follows.
rule import_checkpoint:
    input:
        dataset=DATA,
    output:
        checkpoint=f"{MODEL_DIR}/model.safetensors",
        metrics=f"{MODEL_DIR}/metrics.json",
    log:
        f"results/logs/import_checkpoint/{{dataset}}/{{model}}/seed{{seed}}.log",
    wildcard_constraints:
        model=imported_models(),
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("import_checkpoint")
    resources:
        **rule_resources("import_checkpoint"),
    params:
        **job_params(
            runtime_settings=imported_checkpoint,
            model=base_model,
            fingerprint=train_fingerprint,
            identity=expected_inputs("data"),
            code=code_fingerprint("import_checkpoint"),
        ),
    shell:
        job_shell("import_checkpoint.py")
