"""The captions in workflow/report/: one per report item, valid reStructuredText that
Snakemake's Jinja2 step leaves as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.layout import REPORT_FILES, TEST_REPORT_FILES

CAPTIONS = Path(__file__).resolve().parents[2] / "workflow" / "report"
# Items of rules other than report: the workflow page, the training and SSL pretraining curves.
NAMES = ["workflow", "learning_curves", "ssl_pretraining", *REPORT_FILES, *TEST_REPORT_FILES]


@pytest.mark.parametrize("name", NAMES)
def test_caption_renders_as_restructured_text(name):
    jinja2 = pytest.importorskip("jinja2")
    core = pytest.importorskip("docutils.core")
    text = (CAPTIONS / f"{name}.rst").read_text(encoding="utf-8")
    assert len(text.split()) >= 30, "a caption says what is shown and how it was computed"

    rendered = jinja2.Environment().from_string(text).render(snakemake=_Snakemake(_CONFIG))
    if name != "workflow":  # the workflow page says what the run's config trained
        assert rendered.strip() == text.strip()  # plain text: nothing for Jinja to replace
    # halt_level 2 turns every docutils warning (bad markup) into an exception.
    parts = core.publish_parts(
        rendered, writer="html", settings_overrides={"halt_level": 2, "report_level": 5}
    )
    assert "<p>" in parts["body"]


class _Snakemake:
    def __init__(self, config) -> None:
        self.config = config


_CONFIG = {
    "training": {"folds": None, "configurations": None, "ssl_pretrain": False},
    "splits": {"num_folds": 5, "manual": None},
    "experiments": None,
}


def _about(config) -> str:
    jinja2 = pytest.importorskip("jinja2")
    text = (CAPTIONS / "workflow.rst").read_text(encoding="utf-8")
    rendered = jinja2.Environment().from_string(text).render(snakemake=_Snakemake(config))
    return " ".join(rendered.split())


def test_the_workflow_page_says_what_the_run_trained():
    assert "trains all 5 cross-validation folds of every planned configuration, and" in (
        _about(_CONFIG)
    )
    assert "pretrained per fold" not in _about(_CONFIG)
    one = {
        "training": {"folds": [0], "configurations": ["2d"], "ssl_pretrain": False},
        "splits": {"num_folds": 5, "manual": None},
        "experiments": {"BL": None, "BL+GN": {"ssl_pretrain": True}},
    }
    text = _about(one)
    assert (
        "trains fold(s) 0 of 5 cross-validation folds of the configuration(s) 2d in each "
        "experiment (BL, BL+GN), and"
    ) in text
    assert "pretrained per fold, on that fold's training cases only" in text
    manual = {**_CONFIG, "splits": {"num_folds": 5, "manual": "splits_final.json"}}
    assert "trains all the folds of the manual splits (splits_final.json) of every" in (
        _about(manual)
    )


def test_every_caption_belongs_to_an_item():
    assert sorted(p.stem for p in CAPTIONS.glob("*.rst")) == sorted(NAMES)
