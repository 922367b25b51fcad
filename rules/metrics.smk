rule metrics:
    input:
        retrain_metrics,
    output:
        runs=f"{TABLES}/metrics.parquet",
        diffroar=f"{TABLES}/diffroar.parquet",
    log:
        "results/logs/metrics/{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            identities=retrain_identities,
            code=code_fingerprint("metrics"),
        ),
    shell:
        job_shell("metrics.py")


rule comparisons:
    input:
        f"{TABLES}/metrics.parquet",
    output:
        f"{TABLES}/comparisons.parquet",
    log:
        "results/logs/comparisons/{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            keep_fractions=sorted(EXPERIMENT["keep_fractions"]),
            code=code_fingerprint("compare"),
        ),
    shell:
        job_shell("comparisons.py")


rule combine_table:
    input:
        combine_inputs,
    output:
        "results/{table}.parquet",
    log:
        "results/logs/combine/{table}.log",
    wildcard_constraints:
        table="metrics|diffroar|comparisons|localization|noretrain|sanity",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            code=code_fingerprint("metrics"),
        ),
    shell:
        job_shell("combine_table.py")
