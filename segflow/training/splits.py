"""Cross-validation splits: which training cases each fold holds out.

``splits.json`` is written once, by its own workflow job, before any fold trains (nnU-Net
writes it from whichever fold starts first, which races when folds start together). Three
sources:

- seeded k-fold over the sorted case ids (the default; with seed 12345 and 5 folds these are
  exactly the folds nnU-Net v2 makes, as both shuffle with scikit-learn's ``KFold``);
- grouped k-fold from a case-to-group table (e.g. patient), so that all cases of one group
  are held out by the same fold;
- a manual splits file, in nnU-Net's ``splits_final.json`` form (a list of
  ``{"train": [...], "val": [...]}``) or segflow's own ``splits.json``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segflow import __version__
from segflow.errors import Problem, SegflowError

__all__ = ["check_folds", "fold_cases", "grouped_splits", "kfold_splits", "load_groups",
           "load_manual_splits", "make_splits"]  # fmt: skip

Fold = dict[str, list[str]]


def kfold_splits(case_ids: Sequence[str], num_folds: int, seed: int) -> list[Fold]:
    """Seeded k-fold over the sorted case ids."""
    import numpy as np  # here: the workflow reads manual splits through this module at start-up
    from sklearn.model_selection import KFold

    ids = np.array(sorted(case_ids))
    _check_enough(len(ids), num_folds, "cases")
    kfold = KFold(n_splits=num_folds, shuffle=True, random_state=seed)
    return [
        {"train": ids[train].tolist(), "val": ids[val].tolist()} for train, val in kfold.split(ids)
    ]


def grouped_splits(
    case_ids: Sequence[str], groups: Mapping[str, str], num_folds: int, seed: int
) -> list[Fold]:
    """Seeded k-fold over groups: every case of a group lands in the same validation fold."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    ids = np.array(sorted(case_ids))
    missing = [c for c in ids if c not in groups]
    if missing:
        raise SegflowError(
            "the groups table does not cover every training case",
            [Problem(c, "no group given for this case") for c in missing],
        )
    labels = np.array([groups[c] for c in ids])
    _check_enough(len(set(labels)), num_folds, "groups")
    kfold = GroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    return [
        {"train": ids[train].tolist(), "val": ids[val].tolist()}
        for train, val in kfold.split(ids, groups=labels)
    ]


def _check_enough(count: int, num_folds: int, what: str) -> None:
    if num_folds < 2:
        raise SegflowError(f"cross-validation needs at least 2 folds, not {num_folds}")
    if count < num_folds:
        raise SegflowError(f"{num_folds} folds need at least {num_folds} {what}; found {count}")


def load_groups(path: str | Path) -> dict[str, str]:
    """Read a case-to-group table: CSV or TSV with the columns ``case_id`` and ``group``."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",\t;")
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    if not rows or not {"case_id", "group"} <= set(rows[0]):
        raise SegflowError(
            f"cannot read the groups table {path}",
            [Problem(str(path), "expected a header with the columns case_id and group")],
        )
    groups: dict[str, str] = {}
    problems = []
    for line, row in enumerate(rows, start=2):
        case, group = (row["case_id"] or "").strip(), (row["group"] or "").strip()
        if not case or not group:
            problems.append(Problem(f"{path}:{line}", "empty case_id or group"))
        elif case in groups and groups[case] != group:
            problems.append(Problem(f"{path}:{line}", f"case '{case}' is listed twice"))
        groups[case] = group
    if problems:
        raise SegflowError(f"the groups table {path} is invalid", problems)
    return groups


def load_manual_splits(path: str | Path) -> list[Fold]:
    """Read folds from nnU-Net's ``splits_final.json`` form or segflow's ``splits.json``."""
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SegflowError(f"cannot read the splits file {path}: {err}") from None
    folds = data.get("folds") if isinstance(data, dict) else data
    if not isinstance(folds, list) or not all(
        isinstance(f, dict) and isinstance(f.get("train"), list) and isinstance(f.get("val"), list)
        for f in folds
    ):
        raise SegflowError(
            f"cannot read the splits file {path}",
            [Problem(str(path), 'expected a list of {"train": [case ids], "val": [case ids]}')],
        )
    return [
        {"train": [str(c) for c in f["train"]], "val": [str(c) for c in f["val"]]} for f in folds
    ]


def check_folds(folds: Sequence[Fold], case_ids: Sequence[str], where: str) -> list[str]:
    """Check folds against the dataset; return warnings, raise on errors.

    Raises:
        SegflowError: listing every unknown case, case in two validation folds, empty fold and
            case both trained on and held out by the same fold.
    """
    known = set(case_ids)
    problems: list[Problem] = []
    held_out_by: dict[str, int] = {}
    for k, fold in enumerate(folds):
        name = f"{where}: fold {k}"
        if not fold["val"]:
            problems.append(Problem(name, "holds out no case (empty validation set)"))
        if not fold["train"]:
            problems.append(Problem(name, "trains on no case (empty training set)"))
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
        if unknown:
            problems.append(Problem(name, f"unknown case(s) {unknown[:10]}"))
        both = sorted(set(fold["train"]) & set(fold["val"]))
        if both:
            problems.append(Problem(name, f"case(s) {both[:10]} in both train and val"))
        for case in fold["val"]:
            if case in held_out_by:
                problems.append(
                    Problem(name, f"case '{case}' is already held out by fold {held_out_by[case]}")
                )
            held_out_by.setdefault(case, k)
    if problems:
        raise SegflowError("the cross-validation folds are invalid", problems)
    never = sorted(known - set(held_out_by))
    return [f"{len(never)} case(s) are held out by no fold and get no cross-validation "
            f"prediction: {never[:10]}"] if never else []  # fmt: skip


def make_splits(
    case_ids: Sequence[str],
    num_folds: int,
    seed: int,
    manual: str | Path | None = None,
    groups: str | Path | None = None,
) -> dict[str, Any]:
    """The content of ``splits.json``.

    Args:
        case_ids: the training cases.
        num_folds: folds to make (ignored with ``manual``, which brings its own).
        seed: shuffles the cases (or groups) before they are dealt into folds.
        manual: a splits file to use as it is, after checking it.
        groups: a case-to-group table for grouped k-fold.
    """
    if manual is not None and groups is not None:
        raise SegflowError("give either a manual splits file or a groups table, not both")
    if manual is not None:
        folds, source = load_manual_splits(manual), "manual"
    elif groups is not None:
        folds, source = grouped_splits(case_ids, load_groups(groups), num_folds, seed), "grouped"
    else:
        folds, source = kfold_splits(case_ids, num_folds, seed), "kfold"
    warnings = check_folds(folds, case_ids, str(manual or "splits"))
    return {
        "segflow_version": __version__,
        "seed": seed,
        "source": source,
        "num_folds": len(folds),
        "warnings": warnings,
        "folds": folds,
    }


def fold_cases(splits_path: str | Path, fold: int) -> tuple[list[str], list[str]]:
    """The training and validation cases of ``fold`` in a splits file (segflow's
    ``splits.json`` or nnU-Net's list form).

    Raises:
        SegflowError: the file has no such fold.
    """
    from segflow.io.atomic import read_json

    splits = read_json(splits_path)
    folds = splits["folds"] if isinstance(splits, dict) else splits
    if not 0 <= fold < len(folds):
        raise SegflowError(
            f"fold {fold} does not exist",
            [Problem(str(splits_path), f"holds folds 0 to {len(folds) - 1}")],
        )
    return list(folds[fold]["train"]), list(folds[fold]["val"])
