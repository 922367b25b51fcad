rule figure_methods:
    input:
        f"{TABLES}/diffroar.parquet",
    output:
        report(
            f"{FIGURES}/methods-{{dataset}}.png",
            caption="../workflow/report/methods.rst",
            category="DiffROAR",
            labels={"dataset": "{dataset}", "figure": "methods"},
        ),
    log:
        "results/logs/figures/methods-{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            imputations=FILLS,
            code=code_fingerprint("figures"),
        ),
    shell:
        job_shell("figure_methods.py")


rule figure_imputation:
    input:
        f"{TABLES}/diffroar.parquet",
    output:
        report(
            f"{FIGURES}/imputation-{{dataset}}.png",
            caption="../workflow/report/imputation.rst",
            category="DiffROAR",
            labels={"dataset": "{dataset}", "figure": "imputation"},
        ),
    log:
        "results/logs/figures/imputation-{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            code=code_fingerprint("figures"),
        ),
    shell:
        job_shell("figure_imputation.py")


rule figure_noretrain:
    input:
        diffroar=f"{TABLES}/diffroar.parquet",
        noretrain=noretrain_tables,
    output:
        report(
            f"{FIGURES}/noretrain-{{dataset}}.png",
            caption="../workflow/report/noretrain.rst",
            category="Retrain-free",
            labels={"dataset": "{dataset}", "figure": "retrain vs retrain-free"},
        ),
    log:
        "results/logs/figures/noretrain-{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            imputation=FILLS[0],
            code=code_fingerprint("figures"),
        ),
    shell:
        job_shell("figure_noretrain.py")


rule figure_attributions:
    input:
        dataset=DATA,
        saliency=gallery_saliency,
    output:
        report(
            f"{FIGURES}/attributions-{{dataset}}.png",
            caption="../workflow/report/attributions.rst",
            category="Attributions",
            labels={"dataset": "{dataset}", "figure": "gallery"},
        ),
    log:
        "results/logs/figures/attributions-{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            images=config["figures"]["gallery_images"],
            identity=gallery_identities,
            code=code_fingerprint("figures"),
        ),
    shell:
        job_shell("figure_attributions.py")


rule figure_localization:
    input:
        f"{TABLES}/localization.parquet",
    output:
        report(
            f"{FIGURES}/localization-{{dataset}}.png",
            caption="../workflow/report/localization.rst",
            category="Localization",
            labels={"dataset": "{dataset}", "figure": "localization"},
        ),
    log:
        "results/logs/figures/localization-{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            code=code_fingerprint("figures"),
        ),
    shell:
        job_shell("figure_localization.py")


rule figure_ranking:
    input:
        f"{TABLES}/metrics.parquet",
    output:
        report(
            f"{FIGURES}/ranking-{{dataset}}.png",
            caption="../workflow/report/ranking.rst",
            category="DiffROAR",
            labels={"dataset": "{dataset}", "figure": "ranking"},
        ),
    log:
        "results/logs/figures/ranking-{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            keep_fractions=sorted(EXPERIMENT["keep_fractions"]),
            code=code_fingerprint("figures"),
        ),
    shell:
        job_shell("figure_ranking.py")


rule figure_sanity:
    input:
        sanity_tables,
    output:
        report(
            f"{FIGURES}/sanity-{{dataset}}.png",
            caption="../workflow/report/sanity.rst",
            category="Sanity checks",
            labels={"dataset": "{dataset}", "figure": "parameter randomisation"},
        ),
    log:
        "results/logs/figures/sanity-{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        **job_params(
            code=code_fingerprint("figures"),
        ),
    shell:
        job_shell("figure_sanity.py")


# A named target rule per figure: `snakemake figure_<kind>_<dataset> --cores 2`.
for figure in figure_targets():

    rule:
        name:
            f"figure_{Path(figure).stem.replace('-', '_')}"
        default_target: False
        input:
            figure,
