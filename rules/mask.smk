rule mask:
    input:
        dataset=DATA,
        saliency=SALIENCY,
    output:
        directory(MASKED),
    log:
        "results/logs/mask/{dataset}/{model}/seed{seed}/{method}/{imputation}/{order}-k{k}.log",
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("mask")
    resources:
        **rule_resources("mask"),
    params:
        settings=masking_settings,
        identity=expected_inputs("data", "saliency"),
        code=code_fingerprint("mask"),
    script:
        "../workflow/scripts/mask.py"
