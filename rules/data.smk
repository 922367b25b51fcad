rule data:
    output:
        directory(DATA),
    log:
        "results/logs/data/{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        dataset=lambda wildcards: config["datasets"][wildcards.dataset],
        code=code_fingerprint("data"),
    script:
        "../workflow/scripts/data.py"
