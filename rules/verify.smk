# `snakemake verify`: check every artifact of a finished run against what the config promises
# (diffroar.verify); lists what is damaged or missing and the command that rebuilds it, and
# fails when anything is. It has no input, so it never builds anything itself.


def verify_expectations():
    """Path -> (rule that writes it, identity it must record) of every artifact of the run."""
    from types import SimpleNamespace

    expected = {}
    for dataset in EXPERIMENT["datasets"]:
        wildcards = SimpleNamespace(dataset=dataset)
        expected[DATA.format(dataset=dataset)] = ("data", dataset_identity(wildcards))
        for run in _combinations(wildcards):
            model_dir = MODEL_DIR.format(**vars(run))
            expected[f"{model_dir}/model.safetensors"] = (
                "train",
                checkpoint_identity(run),
            )
            expected[f"{model_dir}/metrics.json"] = ("train", checkpoint_identity(run))
            expected[SALIENCY.format(**vars(run))] = (
                "saliency",
                saliency_identity(run),
            )
            expected[MASKED.format(**vars(run))] = ("mask", masked_identity(run))
            expected[NORETRAIN.format(**vars(run))] = (
                "noretrain",
                {"dataset": dataset, "model": run.model, "base_seed": int(run.seed)},
            )
            for rseed in EXPERIMENT["retrain_seeds"]:
                retrain_dir = RETRAIN_DIR.format(**vars(run), rseed=rseed)
                for name in ("model.safetensors", "metrics.json"):
                    expected[f"{retrain_dir}/{name}"] = (
                        "retrain",
                        run_identity(run, rseed),
                    )
        for table in ("metrics", "diffroar"):
            expected[f"{TABLES}/{table}.parquet".format(dataset=dataset)] = (
                "metrics",
                {"dataset": dataset},
            )
        expected[f"{TABLES}/comparisons.parquet".format(dataset=dataset)] = (
            "comparisons",
            {"dataset": dataset},
        )
    for dataset in block_datasets():
        expected[f"{TABLES}/localization.parquet".format(dataset=dataset)] = (
            "localization",
            {"dataset": dataset},
        )
    for path in robust_targets():
        fields = Path(
            path
        ).parts  # results/models/<dataset>/<model>/seed<seed>/robust.json
        expected[path] = (
            "robust",
            {
                "dataset": fields[2],
                "model": fields[3],
                "seed": int(fields[4][len("seed") :]),
            },
        )
    for path in final_targets():
        writer = "combine_table" if path.endswith(".parquet") else "figure"
        expected.setdefault(path, (writer, None))
    return expected


rule verify:
    localrule: True
    params:
        expected=lambda wildcards: verify_expectations(),
    run:
        from diffroar.verify import report, verify_run

        problems, checked = verify_run("results", params.expected)
        print(report(problems, checked, "results"))
        if problems:
            raise ValueError(
                f"verify: {len(problems)} artifacts are damaged or missing"
            )
