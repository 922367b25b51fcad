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
        code=code_fingerprint("metrics"),
    script:
        "../workflow/scripts/metrics.py"


rule combine_table:
    input:
        lambda wildcards: expand(
            f"{TABLES}/{wildcards.table}.parquet",
            dataset=(
                block_datasets()
                if wildcards.table == "localization"
                else EXPERIMENT["datasets"]
            ),
        ),
    output:
        "results/{table}.parquet",
    log:
        "results/logs/combine/{table}.log",
    wildcard_constraints:
        table="metrics|diffroar|localization",
    conda:
        "../envs/diffroar.yaml"
    params:
        code=code_fingerprint("metrics"),
    script:
        "../workflow/scripts/combine_table.py"
