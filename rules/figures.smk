rule figure_diffroar:
    input:
        f"{TABLES}/diffroar.parquet",
    output:
        report(
            f"{FIGURES}/diffroar-{{dataset}}.png",
            caption="../workflow/report/diffroar.rst",
            category="DiffROAR",
            labels={"dataset": "{dataset}", "figure": "DiffROAR vs k"},
        ),
    log:
        "results/logs/figures/diffroar-{dataset}.log",
    conda:
        "../envs/diffroar.yaml"
    params:
        code=code_fingerprint("figures"),
    script:
        "../workflow/scripts/figure_diffroar.py"


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
        images=config["figures"]["gallery_images"],
        code=code_fingerprint("figures"),
    script:
        "../workflow/scripts/figure_attributions.py"


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
        code=code_fingerprint("figures"),
    script:
        "../workflow/scripts/figure_localization.py"


# A named target rule per figure: `snakemake figure_<kind>_<dataset> --cores 2`.
for figure in figure_targets():

    rule:
        name:
            f"figure_{Path(figure).stem.replace('-', '_')}"
        default_target: False
        input:
            figure,
