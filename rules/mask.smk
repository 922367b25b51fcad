rule mask:
    input:
        dataset=DATA,
        saliency=SALIENCY,
    output:
        directory(MASKED),
    log:
        "results/logs/mask/{dataset}/{model}/seed{seed}/{method}/{order}-k{k}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        tiebreak_seed=config["masking"]["tiebreak_seed"],
        code=code_fingerprint("mask"),
    script:
        "../workflow/scripts/mask.py"
