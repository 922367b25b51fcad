# diffroar: remove-and-retrain evaluation (DiffROAR) of attribution methods.
# Stages, each in rules/<stage>.smk with its code in workflow/diffroar/<stage>.py:
# data -> train (+ robust) -> saliency -> mask -> retrain -> metrics -> figures (+ localization,
# + sanity: the parameter-randomisation check of every base model).
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# Jobs import the diffroar package that sits beside this Snakefile, whatever else is installed
# (and in `--sdm conda` environments, which do not install it): the code fingerprints of
# rules/common.smk are computed from these files. The variable is set here, not required from
# the user, so it is no `envvars:` entry.
PACKAGE_ROOT = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PACKAGE_ROOT)
os.environ.update(
    PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, *filter(None, [os.getenv("PYTHONPATH")])])
)

from diffroar.config import (
    ConfigError,
    ensure_data_files,
    missing_data_files,
    validate_config,
)
from diffroar.resources import available_cpus, check_environment, cores_note
from diffroar.scheduling import bound_rescheduling

# Snakemake's scheduler would start one more re-evaluation timer at every round (its rounds per
# second grow with the jobs finished): one pending timer instead (diffroar/scheduling.py).
bound_rescheduling()


configfile: Path(workflow.basedir) / "config.yaml"


# A bad config value (ConfigError) or a DIFFROAR_* variable that is not a number (ValueError)
# stops the run with one line.
try:
    validate_config(config)
    check_environment(os.environ)
except ValueError as error:
    sys.exit(str(error))
# Data files are checked (and downloaded) only before a run that builds a dataset store, so a dry
# run works without them; it notes what is missing.
for note in missing_data_files(config):
    print(note, file=sys.stderr)
# A local run with more --cores than CPUs runs multi-threaded jobs side by side on shared CPUs.
if workflow.local_exec and workflow.is_main_process:
    note = cores_note(workflow.resource_settings.cores, available_cpus())
    if note:
        print(note, file=sys.stderr)


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/import_checkpoint.smk"
include: "rules/robust.smk"
include: "rules/saliency.smk"
include: "rules/mask.smk"
include: "rules/retrain.smk"
include: "rules/noretrain.smk"
include: "rules/metrics.smk"
include: "rules/localization.smk"
include: "rules/sanity.smk"
include: "rules/figures.smk"
include: "rules/verify.smk"


# The small jobs that read the tables and draw the figures run where Snakemake runs, not in a
# cluster queue.
localrules:
    all,
    metrics,
    combine_table,
    comparisons,
    figure_methods,
    figure_imputation,
    figure_noretrain,
    figure_attributions,
    figure_localization,
    figure_ranking,
    figure_sanity,


onstart:
    try:
        ensure_data_files(config, data_jobs_datasets(workflow.dag))
    except ConfigError as error:
        sys.exit(str(error))


rule all:
    default_target: True
    input:
        final_targets(),
