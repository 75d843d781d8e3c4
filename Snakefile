# segflow: the nnU-Net method as a Snakemake workflow.
#   snakemake --cores all                                   # the built-in demo (config/config.yaml)
#   snakemake --cores all --configfile config/hippocampus.yaml
#   snakemake --cores all --config dataset=PATH/TO/RAW results=PATH/TO/OUTPUT
# The DAG is described in docs/explanation/dag.md; every rule calls `python -m segflow <stage>`.
from snakemake.utils import min_version

min_version("9.0")


# The demo config is the default only when no config is given at all: Snakemake merges a
# `configfile:` directive with --configfile, which would leak the demo's keys into real runs.
if not config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"


# With --use-singularity (--sdm apptainer) every job runs in the CPU image (config
# `containers`); train, validate and predict say `container:` themselves: the GPU image.
container: config["containers"]["cpu"]


include: "workflow/rules/demo.smk"
include: "workflow/rules/holdout.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/fingerprint.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/crossval.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        LAYOUT.plans,
        preprocessed_manifests,
        LAYOUT.splits,
        trained_models,
        crossval_summaries,
        final_targets,


# `snakemake preprocessed`: everything before training (plans, preprocessed data, splits).
rule preprocessed:
    input:
        LAYOUT.plans,
        preprocessed_manifests,
        LAYOUT.splits,


# At the end of every run (not a dry run): where the results are, the headline numbers, and
# the command that builds the report (segflow/run_summary.py).
onsuccess:
    from segflow.run_summary import write_run_summary

    write_run_summary(LAYOUT.root, workflow.configfiles)
