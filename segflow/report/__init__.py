"""The content of the Snakemake report: HTML tables and PNG figures of each stage's results.

:func:`write_report_pages` writes them all; each page or figure also has its own function.
Pages are self-contained HTML (inline CSS, no JavaScript), figures PNG drawn off-screen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from segflow.lazy import lazy_exports

if TYPE_CHECKING:
    from segflow.report.evaluation_pages import (
        crossval_page,
        describe_rule,
        selection_page,
        test_page,
    )
    from segflow.report.pages import write_report_pages
    from segflow.report.planning_pages import dataset_page, plans_page
    from segflow.report.plots import crossval_boxplot, test_boxplot

__all__ = [
    "crossval_boxplot",
    "crossval_page",
    "dataset_page",
    "describe_rule",
    "plans_page",
    "selection_page",
    "test_boxplot",
    "test_page",
    "write_report_pages",
]

# Imported when first used (segflow.lazy): importing the package loads none of them.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "evaluation_pages": (
            "crossval_page",
            "describe_rule",
            "selection_page",
            "test_page",
        ),
        "pages": ("write_report_pages",),
        "planning_pages": (
            "dataset_page",
            "plans_page",
        ),
        "plots": (
            "crossval_boxplot",
            "test_boxplot",
        ),
    },
)
