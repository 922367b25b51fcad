# Masked stores on request: one job per method, imputation and k writes the top-k and the bottom-k
# store from one ranking. No rule reads them (the retrain and noretrain jobs mask in memory, the
# same images bit for bit): ask for one to look at it, e.g.
#   snakemake --cores 2 results/masked/digits/mlp_standard/seed0/gradient/mean/top-k0.2.zarr
rule mask:
    input:
        dataset=DATA,
        saliency=SALIENCY,
    output:
        **{order: directory(of_order(MASKED, order)) for order in ORDERS},
    log:
        "results/logs/mask/{dataset}/{model}/seed{seed}/{method}/{imputation}/k{k}.log",
    conda:
        "../envs/diffroar.yaml"
    threads: rule_threads("mask")
    resources:
        **rule_resources("mask"),
    params:
        **job_params(
            settings=masking_settings,
            identity=expected_inputs("data", "saliency"),
            code=code_fingerprint("mask"),
        ),
    shell:
        job_shell("mask.py")
