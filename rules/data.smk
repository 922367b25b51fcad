rule data:
    output:
        directory(DATA),
    log:
        "results/logs/data/{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("data")
    resources:
        **rule_resources("data"),
    params:
        **job_params(
            dataset=dataset_config,
            code=code_fingerprint("data"),
        ),
    shell:
        job_shell("data.py")
