"""Pooling case fingerprints into the dataset fingerprint (the gather step).

``fingerprint.json`` holds what experiment planning reads: every case's spacing and shapes,
the median share of an image that survives cropping, and the foreground intensity statistics
per channel that CT normalization uses.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from segflow import __version__
from segflow.errors import Problem, SegflowError
from segflow.fingerprint.case import PERCENTILES
from segflow.fingerprint.cropping import bounding_box_shape
from segflow.io.dataset import DatasetJson, pools_intensities
from segflow.io.schema import check_against_schema

__all__ = [
    "FLATTENED_SHARE",
    "flattened_cases",
    "gather_fingerprint",
    "pooled_intensity_statistics",
]

#: A case counts as flattened by the statistics when CT normalization with them (clip to the
#: pooled percentiles, subtract the mean, divide by the std, in float32) keeps fewer than this
#: share of its distinct sampled intensities apart. Refused in a CT channel (the statistics
#: normalize it), a warning in any other.
FLATTENED_SHARE = 0.5

logger = logging.getLogger(__name__)


def pooled_intensity_statistics(samples_per_case: Sequence[np.ndarray]) -> dict[str, float]:
    """Intensity statistics of several cases' samples, every case weighing the same.

    Each case's values get the weight ``1 / len(values)``, so the statistics are those of the
    mixture of the cases' foreground distributions: a case with a large foreground counts as
    much as one with a small foreground. Mean and std are the weighted mean and population
    std; the percentiles and the median are weighted inverted-CDF percentiles (the smallest
    value whose weighted share of values at or below it reaches the percentile). Cases with
    no values are left out.

    Args:
        samples_per_case: one 1D array of intensities per case.

    Returns:
        ``mean``, ``median``, ``std``, ``min``, ``max``, ``percentile_00_5``,
        ``percentile_99_5`` (min and max of the samples).

    Raises:
        ValueError: no case has any value.
    """
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in samples_per_case]
    arrays = [v for v in arrays if v.size]
    if not arrays:
        raise ValueError("no intensities to pool")
    values = np.concatenate(arrays)
    weights = np.concatenate([np.full(v.size, 1.0 / v.size) for v in arrays]) / len(arrays)
    # numpy's own (pairwise) summation, not np.dot: BLAS sums in an order that depends on its
    # thread count, so the same samples gave means differing in the last digit between a
    # Snakemake job (one thread) and a shell.
    mean = float(np.sum(weights * values))
    std = float(np.sqrt(np.sum(weights * (values - mean) ** 2)))
    low, median, high = np.percentile(
        values, list(PERCENTILES.values()), weights=weights, method="inverted_cdf"
    )
    return {
        "mean": mean,
        "median": float(median),
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
    }


def flattened_cases(
    samples_per_case: Sequence[np.ndarray], stats: Mapping[str, float]
) -> list[tuple[int, int, int]]:
    """The cases whose foreground intensities CT normalization with ``stats`` would flatten.

    Each case's samples are clipped to the pooled ``percentile_00_5``..``percentile_99_5``
    and standardized with the pooled ``mean`` and ``std`` in float32, as
    :func:`segflow.preprocessing.normalization.ct_normalization` does. A case is flattened
    when fewer than :data:`FLATTENED_SHARE` of its distinct clipped values stay distinct:
    statistics dominated by one case of impossible intensities (a mean of 8e36) make every
    other case a single constant.

    Returns:
        ``(index, distinct before, distinct after)`` of each flattened case.
    """
    low, high = stats["percentile_00_5"], stats["percentile_99_5"]
    mean, std = np.float32(stats["mean"]), np.float32(max(stats["std"], 1e-8))
    flattened = []
    for index, samples in enumerate(samples_per_case):
        clipped = np.clip(np.asarray(samples, dtype=np.float32), low, high)
        before = np.unique(clipped).size
        after = np.unique((clipped - mean) / std).size
        if before > 1 and after < FLATTENED_SHARE * before:
            flattened.append((index, before, after))
    return flattened


def _flattening_problems(
    channel: int, stats: Mapping[str, float], cases: Sequence[Mapping[str, Any]]
) -> list[Problem]:
    """One problem naming the flattened cases of a channel and the case that dominates its
    statistics (the largest absolute foreground intensity)."""
    samples = [np.asarray(fp["channels"][channel]["samples"], dtype=np.float32) for fp in cases]
    flattened = flattened_cases(samples, stats)
    if not flattened:
        return []

    def magnitude(fp: Mapping[str, Any]) -> float:
        own = fp["channels"][channel]["statistics"]
        return 0.0 if own is None else max(abs(own["min"]), abs(own["max"]))

    culprit = max(cases, key=magnitude)
    shown = ", ".join(
        f"'{cases[i]['case_id']}' ({before} distinct values -> {after})"
        for i, before, after in flattened[:8]
    )
    more = f", ... ({len(flattened)} cases)" if len(flattened) > 8 else ""
    return [
        Problem(
            f"channel {channel}",
            f"mean {stats['mean']:.3g} and std {stats['std']:.3g} of the foreground "
            f"intensities would make these cases (nearly) constant once normalized: {shown}"
            f"{more}; case '{culprit['case_id']}' reaches {magnitude(culprit):.3g} and "
            "dominates the statistics: check its image (validate-dataset reports such cases)",
        )
    ]


def _where(fp: Any, index: int, sources: Sequence[str] | None) -> str:
    if sources is not None:
        return str(sources[index])
    case_id = fp.get("case_id") if isinstance(fp, Mapping) else None
    if isinstance(case_id, str):
        return f"case fingerprint '{case_id}'"
    return f"case fingerprint #{index}"


def _schema_problems(fp: Any, where: str) -> list[Problem]:
    """Problems of ``fp`` against the ``case_fingerprint`` schema.

    jsonschema checks the sample lists one value at a time, which takes seconds for a few
    hundred cases; they are checked here at once with numpy instead, everything else by the
    schema.
    """
    samples: list[Any] = []
    shallow = fp
    channels = fp.get("channels") if isinstance(fp, Mapping) else None
    if isinstance(channels, list) and all(isinstance(c, Mapping) for c in channels):
        samples = [c.get("samples") for c in channels]
        shallow = {**fp, "channels": [{**c, "samples": []} for c in channels]}
    try:
        check_against_schema(shallow, "case_fingerprint", where)
    except SegflowError as err:
        return err.problems
    problems = []
    for c, values in enumerate(samples):
        if not isinstance(values, list) or not _all_finite_numbers(values):
            problems.append(
                Problem(f"{where}:channels/{c}/samples", "must be a list of finite numbers")
            )
    return problems


def _all_finite_numbers(values: list[Any]) -> bool:
    if not all(type(v) is float or type(v) is int for v in values):
        return False
    return bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())


def _consistency_problems(fp: Mapping[str, Any], where: str, dataset: DatasetJson, seed: int):
    problems = []
    if fp["seed"] != seed:
        problems.append(
            Problem(
                where,
                f"made with seed {fp['seed']}, gathering with seed {seed}; "
                "fingerprint every case with the same seed",
            )
        )
    if len(fp["channels"]) != dataset.num_channels:
        problems.append(
            Problem(
                where,
                f"{len(fp['channels'])} channel(s); dataset.json names {dataset.num_channels}",
            )
        )
    if bounding_box_shape(fp["bbox"]) != list(fp["shape_after_crop"]):
        problems.append(
            Problem(
                where,
                f"shape_after_crop {fp['shape_after_crop']} is not the extent of bbox {fp['bbox']}",
            )
        )
    for c, channel in enumerate(fp["channels"]):
        num_fg = channel["num_foreground_voxels"]
        expected = min(num_fg, fp["num_samples"])
        if len(channel["samples"]) != expected:
            problems.append(
                Problem(
                    f"{where}:channels/{c}",
                    f"{len(channel['samples'])} samples; "
                    f"expected {expected} of {num_fg} foreground voxels",
                )
            )
        if (channel["statistics"] is None) != (num_fg == 0):
            problems.append(
                Problem(
                    f"{where}:channels/{c}",
                    "statistics must be null exactly when there are no foreground voxels",
                )
            )
    return problems


def _check_cases(
    case_fingerprints: Sequence[Any],
    dataset: DatasetJson,
    seed: int,
    sources: Sequence[str] | None,
) -> None:
    if not case_fingerprints:
        raise SegflowError("cannot gather a fingerprint from no cases")
    if sources is not None and len(sources) != len(case_fingerprints):
        raise ValueError(f"{len(sources)} sources for {len(case_fingerprints)} fingerprints")
    problems: list[Problem] = []
    valid = []
    for i, fp in enumerate(case_fingerprints):
        where = _where(fp, i, sources)
        schema_problems = _schema_problems(fp, where)
        if schema_problems:
            problems += schema_problems
            continue
        problems += _consistency_problems(fp, where, dataset, seed)
        valid.append((where, fp))
    counts = Counter(fp["case_id"] for _, fp in valid)
    problems += [
        Problem(where, f"case '{fp['case_id']}' is given {counts[fp['case_id']]} times")
        for where, fp in valid
        if counts[fp["case_id"]] > 1
    ]
    if len({fp["is_2d"] for _, fp in valid}) > 1:
        problems += [Problem(where, f"is_2d is {fp['is_2d']}") for where, fp in valid]
        problems.append(Problem("cases", "2D and 3D cases are mixed; a dataset is one or other"))
    if problems:
        raise SegflowError(
            "invalid case fingerprints; rerun the fingerprint of these cases", problems
        )


def gather_fingerprint(
    case_fingerprints: list[dict],
    dataset: DatasetJson,
    seed: int,
    sources: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Pool the case fingerprints of a dataset into ``fingerprint.json``.

    Cases appear sorted by case id whatever order they are given in. The foreground intensity
    statistics of each channel weigh every case alike (see
    :func:`pooled_intensity_statistics`). nnU-Net gets the same weighting by drawing an equal
    number of voxels per case with replacement; weighting each case's sample by the inverse of
    its size gives that mixture without drawing a second, random sample, and lets a case with
    few foreground voxels contribute each of them once. Without it, cases with large
    foreground regions would set the statistics alone, and datasets mixing intensity ranges
    (Hippocampus does) would get a CT clipping range that fits only those cases. ``min`` and
    ``max`` are the exact extremes over all foreground voxels, from the cases' own statistics.

    Args:
        case_fingerprints: the cases' fingerprints (:func:`fingerprint_case` results).
        dataset: the dataset description.
        seed: the run's seed; every case must have been fingerprinted with it.
        sources: optional names (file paths) of the fingerprints, for messages.

    Returns:
        The content of ``fingerprint.json`` (schema ``fingerprint``).

    Raises:
        SegflowError: no cases, or case fingerprints that break their schema, repeat a case,
            disagree with the dataset or the seed, or mix 2D and 3D; every problem is listed
            and named by its file (or case). Also when no case has any foreground voxel.
    """
    _check_cases(case_fingerprints, dataset, seed, sources)
    cases = sorted(case_fingerprints, key=lambda fp: fp["case_id"])
    intensity_properties = {}
    problems: list[Problem] = []
    for c in range(dataset.num_channels):
        channels = [fp["channels"][c] for fp in cases]
        with_fg = [ch["statistics"] for ch in channels if ch["statistics"] is not None]
        if not with_fg:
            raise SegflowError(
                "no training case has foreground voxels",
                [
                    Problem(
                        "cases",
                        "every label is empty (or only ignore label) inside the "
                        "nonzero region; there is nothing to learn",
                    )
                ],
            )
        stats = pooled_intensity_statistics(
            [np.asarray(ch["samples"], dtype=np.float32) for ch in channels]
        )
        stats["min"] = min(s["min"] for s in with_fg)
        stats["max"] = max(s["max"] for s in with_fg)
        flattening = _flattening_problems(c, stats, cases)
        if pools_intensities(dataset.channel_names.get(c, "")):
            problems += flattening
        else:  # the channel is normalized per image: the statistics stay unused
            for problem in flattening:
                logger.warning("%s: %s (unused: the channel is normalized per image)",
                               problem.where, problem.message)  # fmt: skip
        intensity_properties[str(c)] = stats
    if problems:
        raise SegflowError(
            "the intensity statistics would flatten the data; refusing to write them", problems
        )
    relative_sizes = [fp["relative_size_after_cropping"] for fp in cases]
    logger.info("gathered the fingerprint of %d cases", len(cases))
    return {
        "segflow_version": __version__,
        "seed": seed,
        "dataset_name": dataset.name,
        "num_cases": len(cases),
        "case_ids": [fp["case_id"] for fp in cases],
        "is_2d": bool(cases[0]["is_2d"]),
        "spacings": [list(fp["spacing"]) for fp in cases],
        "shapes_before_crop": [list(fp["shape_before_crop"]) for fp in cases],
        "shapes_after_crop": [list(fp["shape_after_crop"]) for fp in cases],
        "median_relative_size_after_cropping": float(np.median(relative_sizes)),
        "foreground_intensity_properties_per_channel": intensity_properties,
        "num_foreground_voxels_per_case": [
            fp["channels"][0]["num_foreground_voxels"] for fp in cases
        ],
    }
