# One job per base model: its accuracy on the masked test images of every method x imputation x
# k x order, masked in memory as the retrain jobs mask them (diffroar.mask.masked_splits).
rule noretrain:
    input:
        dataset=DATA,
        checkpoint=f"{MODEL_DIR}/model.safetensors",
        saliency=noretrain_saliency,
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
            imputations=FILLS,
            keep_fractions=KEEP_FRACTIONS,
            masking=noretrain_masking,
            model=base_model,
            fingerprint=train_fingerprint,
            identity=noretrain_identities,
            code=code_fingerprint("noretrain"),
        ),
    shell:
        job_shell("noretrain.py")
