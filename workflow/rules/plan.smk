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
        preset=config["planning"]["preset"],
        # Options as lists of whole arguments: `:q` quotes each one.
        gpu_memory=(
            [f"--gpu-memory-gb={config['planning']['gpu_memory_target_gb']}"]
            if config["planning"]["gpu_memory_target_gb"]
            else []
        ),
        widths=[
            f"--{key.replace('_', '-')}={config['planning'][key]}"
            for key in ("base_features", "max_features")
            if config["planning"][key] is not None
        ],
        seed=config["seed"],
    shell:
        (
            "python -m segflow --log={log:q} move-plans --source-plans={input.source_plans:q}"
            " --target-dataset-json={input.dataset_json:q}"
            " --target-fingerprint={input.fingerprint:q} --out={output:q}"
            if config["planning"]["plans_from"]
            else "python -m segflow --log={log:q} plan --dataset-json={input.dataset_json:q}"
            " --fingerprint={input.fingerprint:q} --preset={params.preset:q}"
            " {params.gpu_memory:q} {params.widths:q} --seed={params.seed:q} --out={output:q}"
        )


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
