# `snakemake verify`: check every artifact of a finished run against what the config promises
# (diffroar.verify); lists what is damaged or missing and the command that rebuilds it, and
# fails when anything is. It has no input, so it never builds anything itself.


rule verify:
    log:
        "results/logs/verify.log",
    localrule: True
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            expected=lambda wildcards: verify_expectations(),
        ),
    shell:
        job_shell("verify.py")
