# Experiment planning. A checkpoint: the plans decide which configurations exist downstream.
checkpoint plan:
    input:
        dataset_json=DATASET / "dataset.json",
        fingerprint=LAYOUT.fingerprint,
    output:
        LAYOUT.plans,
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
    conda:
        "../../envs/cpu.yaml"
    log:
        LOGS / "plan.log",
    shell:
        "python -m segflow --log={log:q} plan --dataset-json={input.dataset_json:q}"
        " --fingerprint={input.fingerprint:q} --preset={params.preset:q} {params.gpu_memory:q}"
        " {params.widths:q} --seed={params.seed:q} --out={output:q}"
