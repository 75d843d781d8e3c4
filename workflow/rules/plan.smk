# Experiment planning. A checkpoint: the plans decide which configurations exist downstream.
# With planning.plans_from (fine-tuning), another dataset's plans are moved to this one instead.
checkpoint plan:
    input:
        dataset_json=DATASET / "dataset.json",
        fingerprint=LAYOUT.fingerprint,
        source_plans=config["planning"]["plans_from"] or [],
    output:
        LAYOUT.plans,
    log:
        LOGS / "plan.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        command=planning_command(config["planning"]),
        # Options as lists of whole arguments: `:q` quotes each one.
        options=lambda wc, input: planning_options(config["planning"], input),
    shell:
        "python -m segflow --log={log:q} {params.command:q} {params.options:q} --out={output:q}"


# An experiment's own planning (`experiments.<name>.planning`, e.g. {preset: resenc_m}): its
# plans, named by the planning values (segflow/config.py), shared by the experiments that plan
# alike. Changing one experiment's planning renames its plans: only its jobs rerun.
checkpoint plan_experiment:
    input:
        dataset_json=DATASET / "dataset.json",
        fingerprint=LAYOUT.fingerprint,
        source_plans=lambda wc: experiment_planning_section(wc.plans)["plans_from"] or [],
    output:
        LAYOUT.named_plans("{plans}"),
    log:
        LOGS / "plan" / "{plans}.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        command=lambda wc: planning_command(experiment_planning_section(wc.plans)),
        options=lambda wc, input: planning_options(experiment_planning_section(wc.plans), input),
    shell:
        "python -m segflow --log={log:q} {params.command:q} {params.options:q} --out={output:q}"
