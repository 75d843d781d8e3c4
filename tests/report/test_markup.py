"""The HTML building blocks: escaping, number formatting, tables."""

from __future__ import annotations

import math

import numpy as np

from segflow.report.markup import (
    MISSING,
    Html,
    escape,
    format_number,
    format_vector,
    page,
    table,
)


def test_escape_covers_tags_ampersands_and_quotes():
    assert escape("<b>\"x\" & 'y'") == "&lt;b&gt;&quot;x&quot; &amp; &#x27;y&#x27;"


def test_format_number_handles_missing_and_numpy_values():
    assert format_number(None) == MISSING
    assert format_number(math.nan) == MISSING
    assert format_number(np.float32("nan")) == MISSING
    assert format_number(np.float64(0.12345)) == "0.123"
    assert format_number(np.int64(7)) == "7"
    assert format_number(2.5, 1) == "2.5"
    assert format_number(True) == "yes"


def test_format_vector_writes_whole_floats_as_integers():
    assert format_vector([22.0, 53.0, 51.5], 1) == "22 × 53 × 51.5"
    assert format_vector([0.98882, 0.98882]) == "0.989 × 0.989"
    assert format_vector(None) == MISSING
    assert format_vector([]) == MISSING


def test_table_escapes_text_but_keeps_html_and_marks_highlighted_rows():
    text = table(
        ["<name>", "value"],
        [["<b>", 0.5], [Html("<i>kept</i>"), math.nan]],
        caption="a & b",
        highlight=[1],
    )
    assert "<th>&lt;name&gt;</th>" in text
    assert "<td>&lt;b&gt;</td>" in text
    assert '<td class="num">0.500</td>' in text
    assert '<tr class="highlight"><td><i>kept</i></td><td class="num">n/a</td></tr>' in text
    assert "<caption>a &amp; b</caption>" in text


def test_page_is_a_whole_document_with_an_escaped_title():
    text = page("A <title>", ["<p>body</p>"])
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>A &lt;title&gt;</title>" in text
    assert "<h1>A &lt;title&gt;</h1>" in text
    assert "<style>" in text and "<script" not in text


def test_every_page_names_the_segflow_version_that_wrote_it():
    from segflow import __version__

    text = page("Plans", ["<p>body</p>"])
    assert f'<p class="note">Written by segflow {__version__}.</p>\n</body>' in text
