rule localization:
    input:
        dataset=DATA,
        saliency=localization_saliency,
    output:
        f"{TABLES}/localization.parquet",
    log:
        "results/logs/localization/{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("localization")
    resources:
        **rule_resources("localization"),
    params:
        **job_params(
            keep_fractions=EXPERIMENT["keep_fractions"],
            tiebreak_seed=config["masking"]["tiebreak_seed"],
            ranking=config["masking"]["ranking"],
            identity=localization_identities,
            code=code_fingerprint("localization"),
        ),
    shell:
        job_shell("localization.py")
