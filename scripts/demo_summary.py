"""Print where a finished run's results are and its headline numbers (`make demo` calls it).

    python scripts/demo_summary.py results/demo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def main(results: Path) -> None:
    print(f"\nFinished. Everything is in {results}/:")
    for summary in sorted((results / "crossval").glob("*/summary.json")):
        dice = _read(summary)["mean_foreground_dice"]
        print(f"  cross-validation {summary.parent.name}: mean foreground Dice {dice:.3f}")
    selection = _read(results / "selection.json")["selected"]
    print(f"  selected model: {selection['name']} (cross-validation Dice "
          f"{selection['mean_foreground_dice']:.3f}) -> {results / 'selection.json'}")  # fmt: skip
    rules = _read(results / "postprocessing.json")["rules"]
    print(f"  postprocessing rules kept: {rules or 'none'} -> {results / 'postprocessing.json'}")
    test = results / "test_summary.json"
    if test.is_file():
        content = _read(test)
        per_class = ", ".join(
            f"{name} {values['dice']:.3f}" for name, values in content["mean"].items()
        )
        print(f"  test set ({content['num_cases']} cases): mean foreground Dice "
              f"{content['mean_foreground_dice']:.3f} ({per_class})")  # fmt: skip
        print(f"  test metrics: {results / 'test_metrics.csv'}, predictions: "
              f"{results / 'predictions'}/")  # fmt: skip
    print(f"  exported model: {results / 'model'}/ and {results / 'model.zip'}")
    print(f"  report: {results / 'report.html'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/demo"))
