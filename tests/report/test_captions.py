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

    class Snakemake:
        def __init__(self) -> None:
            self.config: dict[str, object] = {}

    rendered = jinja2.Environment().from_string(text).render(snakemake=Snakemake())
    assert rendered.strip() == text.strip()  # plain text: nothing for Jinja to replace
    # halt_level 2 turns every docutils warning (bad markup) into an exception.
    parts = core.publish_parts(
        rendered, writer="html", settings_overrides={"halt_level": 2, "report_level": 5}
    )
    assert "<p>" in parts["body"]


def test_every_caption_belongs_to_an_item():
    assert sorted(p.stem for p in CAPTIONS.glob("*.rst")) == sorted(NAMES)
