# What jobs ask of a cluster (workflow/profiles/slurm). Memory (mem_mb) of the jobs that hold
# whole images, sized from the images they read (segflow/job_resources.py): on a cluster the
# jobs' memory requests (sbatch --mem); locally they count against `--resources mem_mb=...`
# when given. Each retry (--retries) asks for more. Other rules take the profile's defaults.
from segflow import job_resources


def _fallback_mem_mb(input, attempt):
    # Headers not readable yet (a dry run before the files exist) or not at all
    # (validate_dataset reports why): from the compressed input size.
    return job_resources.input_size_mem_mb(input.size_mb, attempt)


def fingerprint_batch_mem_mb(wildcards, input, threads, attempt):
    try:
        batch = RUN.batch_files(fingerprint_batches()[wildcards.batch])
        return job_resources.fingerprint_batch_mem_mb(batch, workers=threads, attempt=attempt)
    except Exception:
        return _fallback_mem_mb(input, attempt)


def fingerprint_mem_mb(wildcards, input, attempt):
    return job_resources.fingerprint_mem_mb(input.size_mb, attempt)


def preprocess_mem_mb(wildcards, input, threads, attempt):
    try:
        batch = RUN.batch_files(preprocess_batches()[wildcards.batch])
        # preprocess_experiment's jobs name the plans (an experiment's own planning).
        plans = getattr(wildcards, "plans", None)
        return job_resources.preprocess_mem_mb(
            batch, planned(plans), wildcards.configuration, workers=threads, attempt=attempt
        )
    except Exception:
        return _fallback_mem_mb(input, attempt)


# Jobs that merge a few small files run where Snakemake runs (on a cluster: the login node)
# instead of queueing as cluster jobs for seconds of work.
localrules:
    split,
    crossval,
    report_pages,


if HAS_TEST_LABELS:

    localrules:
        report_test_pages,
