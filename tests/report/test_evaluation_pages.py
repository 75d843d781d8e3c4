"""The cross-validation, selection and test pages."""

from __future__ import annotations

import re

import pytest

from segflow.errors import SegflowError
from segflow.report import evaluation_pages
from segflow.report.evaluation_pages import crossval_page, describe_rule, selection_page
from segflow.report.markup import MISSING


def _row_of(text: str, first_cell: str) -> str:
    """The table row whose first cell is ``first_cell`` (escaped)."""
    match = re.search(rf"<tr[^>]*><td[^>]*>{re.escape(first_cell)}</td>.*?</tr>", text)
    assert match, first_cell
    return match.group(0)


def test_crossval_page_shows_means_sds_and_defined_cases(tmp_path, crossval_csvs, self_contained):
    text = crossval_page(crossval_csvs, tmp_path / "c.html").read_text(encoding="utf-8")
    self_contained(text)
    overview = _row_of(text, "2d")
    assert re.findall(r">([\d.]+)</td>", overview) == ["3", "0.650", "0.800", "0.500"]
    assert re.findall(r">([\d.]+)</td>", _row_of(text, "3d_fullres")) == [
        "3",
        "0.850",
        "0.900",
        "0.800",
    ]
    # Per class of 2d: Dice 0.8 ± 0.1 and HD95 4 ± 2 in all cases; lesion HD95 in two of three.
    assert '0.800 ± 0.100<span class="n">n=3/3</span>' in text
    assert '4.00 ± 2.00<span class="n">n=3/3</span>' in text
    assert '1.50 ± 2.12<span class="n">n=2/3</span>' in text
    assert '0.500 ± 0.500<span class="n">n=3/3</span>' in text
    assert "<td>&lt;b&gt;</td>" in text


def test_crossval_page_gives_the_folds_of_tables_that_have_them(tmp_path, crossval_csvs):
    text = crossval_page(crossval_csvs, tmp_path / "c.html").read_text(encoding="utf-8")
    folds = text[text.index("Mean foreground Dice per fold") :]
    assert "<th>fold 0</th><th>fold 1</th>" in folds
    assert re.findall(r">([\d.]+)</td>", _row_of(folds, "2d")) == ["0.950", "0.500"]
    # 3d_fullres has no fold column: it has no row there.
    fold_table = folds[: folds.index("</table>")]
    assert "3d_fullres" not in fold_table


def test_crossval_page_with_a_metric_undefined_everywhere(tmp_path, crossval_csvs):
    import pandas as pd

    table = pd.read_csv(crossval_csvs["2d"])
    table.loc[table["class"] == "lesion", ["hd95", "assd"]] = float("nan")
    table.to_csv(crossval_csvs["2d"], index=False)
    text = crossval_page({"2d": crossval_csvs["2d"]}, tmp_path / "c.html").read_text()
    assert 'n/a<span class="n">n=0/3</span>' in text


def test_crossval_page_needs_tables(tmp_path, crossval_csvs):
    with pytest.raises(SegflowError, match="no configuration"):
        crossval_page({}, tmp_path / "c.html")
    with pytest.raises(SegflowError, match="does not exist"):
        crossval_page({"2d": tmp_path / "absent.csv"}, tmp_path / "c.html")


def test_selection_page_sorts_candidates_and_highlights_the_winner(
    tmp_path, json_files, self_contained
):
    out = selection_page(json_files["selection"], json_files["postprocessing"], tmp_path / "s.html")
    text = out.read_text(encoding="utf-8")
    self_contained(text)
    candidates = text[text.index("<h2>Candidates</h2>") : text.index("<h2>Postprocessing</h2>")]
    names = re.findall(r'<tr[^>]*><td class="num">\d</td><td>([^<]+)</td>', candidates)
    assert names == ["2d,3d_fullres", "3d_fullres", "2d"]
    winner = re.findall(r'<tr class="highlight">.*?</tr>', candidates)
    assert len(winner) == 1
    assert "<td>2d,3d_fullres</td>" in winner[0] and "<td>selected</td>" in winner[0]
    assert "<th>mean foreground Dice</th><th>Dice &lt;b&gt;</th><th>Dice lesion</th>" in text
    assert "<td>folds</td><td>0, 1, 2, 3, 4</td>" in text


def test_selection_page_shows_each_step_before_and_after(tmp_path, selection, postprocessing):
    text = selection_page(selection, postprocessing, tmp_path / "s.html").read_text()
    steps = text[text.index("<h2>Postprocessing</h2>") :]
    first, second, third = (_row_of(steps, str(n)) for n in (1, 2, 3))
    assert "<td>0.8750 → 0.9000</td>" in first and "<td>kept</td>" in first
    # Step 1 was kept: step 2 starts from its result.
    assert "<td>0.9000 → 0.8900</td>" in second and "<td>0.9600 → 0.9400</td>" in second
    assert "<td>rejected</td>" in second and "<td>&lt;b&gt;</td>" in second
    assert "<td>0.9000 → 0.9250</td>" in third and "<td>0.8400 → 0.8900</td>" in third
    assert len(re.findall(r'<tr class="highlight">', steps)) == 2
    assert re.findall(r">([\d.]+)</td>", _row_of(steps, "after postprocessing")) == [
        "0.925",
        "0.960",
        "0.890",
    ]
    assert (
        "<li>Keep only the largest connected component of labels 1, 2 (foreground), "
        "taken together.</li>"
    ) in steps
    assert "<li>Keep only the largest connected component of label 2 (lesion).</li>" in steps
    assert "6 neighbours in 3D" in steps


def test_selection_page_without_rules(tmp_path, selection, postprocessing):
    for step in postprocessing["steps"]:
        step["kept"] = False
    postprocessing["rules"] = []
    postprocessing["final"] = postprocessing["baseline"]
    text = selection_page(selection, postprocessing, tmp_path / "s.html").read_text()
    assert "None: the predictions are used as the model outputs them." in text
    assert "<li>" not in text


def test_selection_page_puts_unscored_candidates_last(tmp_path, selection, postprocessing):
    selection["candidates"][0]["mean_foreground_dice"] = None
    text = selection_page(selection, postprocessing, tmp_path / "s.html").read_text()
    last = re.findall(r'<tr[^>]*><td class="num">(\d)</td><td>([^<]+)</td>', text)[2]
    assert last == ("3", "2d")


def test_selection_page_names_missing_keys(tmp_path, selection, postprocessing):
    del selection["selected"]
    with pytest.raises(SegflowError, match="missing key 'selected'"):
        selection_page(selection, postprocessing, tmp_path / "s.html")


def test_describe_rule_in_words():
    assert describe_rule({"labels": [3]}) == "keep only the largest connected component of label 3"
    assert describe_rule({"labels": [1, 2]}, {(1, 2): "foreground"}) == (
        "keep only the largest connected component of labels 1, 2 (foreground), taken together"
    )


def test_test_page_shows_means_and_each_case(tmp_path, test_csv, self_contained):
    text = evaluation_pages.test_page(test_csv, tmp_path / "t.html").read_text(encoding="utf-8")
    self_contained(text)
    assert '<td>mean foreground Dice</td><td class="num">0.600</td>' in text
    assert '0.700 ± 0.141<span class="n">n=2/2</span>' in text  # Dice of <b>
    assert '0.00<span class="n">n=1/2</span>' in text  # HD95 of lesion: one case defined
    assert "<th>Dice &lt;b&gt;</th><th>Dice lesion</th><th>HD95 (mm) &lt;b&gt;</th>" in text
    cells = re.findall(r">([\d.a-z/]+)</td>", _row_of(text, "t0"))
    assert cells == ["t0", "0.600", "0.000", "3.00", "n/a"]


def test_crossval_page_shows_the_ablation_table_from_the_summaries(tmp_path, crossval_csvs):
    import json
    import shutil

    models = {}
    costs = {"2d__base": (1234, 0.25), "3d_fullres__larger": (98765, 1.5)}
    for (name, (parameters, seconds)), source in zip(
        costs.items(), crossval_csvs.values(), strict=True
    ):
        folder = tmp_path / "crossval" / name
        folder.mkdir(parents=True)
        models[name] = shutil.copy(source, folder / "metrics.csv")
        model = {"parameters": parameters, "seconds_per_iteration": seconds, "experiment": None}
        if name == "3d_fullres__larger":
            model["preset"] = "resenc_m"  # summaries of older runs name none
        (folder / "summary.json").write_text(json.dumps({"model": model}))
    text = crossval_page(models, tmp_path / "c.html").read_text(encoding="utf-8")
    ablation = text[text.index("Models compared") :]
    # experiment, configuration, planner, mean foreground Dice, Dice per class, parameters,
    # s/iteration
    # (differs in: the summaries of older runs record no settings)
    assert re.findall(r">([^<]*)</td>", _row_of(ablation, "base")) == [
        "base", "2d", MISSING, MISSING, "0.650", "0.800", "0.500", "1234", "0.250"
    ]  # fmt: skip
    assert re.findall(r">([^<]*)</td>", _row_of(ablation, "larger"))[1:] == [
        "3d_fullres", "resenc_m", MISSING, "0.850", "0.900", "0.800", "98765", "1.500"
    ]  # fmt: skip
    # Without the models' summaries (older runs): no ablation table.
    assert "Models compared" not in crossval_page(crossval_csvs, tmp_path / "d.html").read_text()


def test_the_ablation_table_says_what_each_model_overrides(tmp_path, crossval_csvs):
    import json
    import shutil

    from segflow.crossval.model_facts import result_settings

    base = {"epochs": 2, "loss": "dice_ce", "loss_parameters": None, "seed": 1,
            "experiment": "BL", "network": {"norm": "instance", "architecture": "planned"},
            "pretrained_weights": None, "sas_augmentation": False, "device": "cpu"}  # fmt: skip
    experiments = {
        "2d__BL": base,
        "2d__exp_log": {**base, "experiment": "exp_log", "loss": "exp_log",
                        "loss_parameters": {"gamma_dice": 0.5}},
        "2d__BL+GN": {**base, "experiment": "BL+GN", "network": {**base["network"],
                                                                 "norm": "group"}},
        "2d__ssl": {**base, "experiment": "ssl", "sas_augmentation": True,
                    "pretrained_weights": "out/pretraining/2d__ssl/fold_0/checkpoint_ssl.pt"},
    }  # fmt: skip
    models = {}
    source = next(iter(crossval_csvs.values()))
    for name, settings in experiments.items():
        folder = tmp_path / "crossval" / name
        folder.mkdir(parents=True)
        models[name] = shutil.copy(source, folder / "metrics.csv")
        facts = {"parameters": 10, "seconds_per_iteration": 0.1,
                 "settings": result_settings(settings)}  # fmt: skip
        (folder / "summary.json").write_text(json.dumps({"model": facts}))
    text = crossval_page(models, tmp_path / "c.html").read_text(encoding="utf-8")
    ablation = text[text.index("Models compared") :]

    def differs(experiment):
        return re.findall(r">([^<]*)</td>", _row_of(ablation, experiment))[3]

    assert differs("BL") == "nothing"
    assert differs("exp_log") == "loss exp_log, loss_parameters gamma_dice 0.5"
    assert differs("BL+GN") == "network.norm group"
    assert differs("ssl") == ("pretrained_weights self-supervised, per fold, sas_augmentation true")
def test_crossval_page_says_which_backend_and_precision_predicted(tmp_path, crossval_csvs):
    import json

    text = crossval_page({"2d": crossval_csvs["2d"]}, tmp_path / "c.html").read_text()
    assert "predicted with" not in text  # folds of an older segflow say nothing
    for fold, backend in ((0, "openvino"), (1, "torch")):
        (tmp_path / f"fold_{fold}").mkdir()
        summary = {"backend": backend, "precision": "bfloat16"}
        (tmp_path / f"fold_{fold}" / "summary.json").write_text(json.dumps(summary))
    text = crossval_page({"2d": crossval_csvs["2d"]}, tmp_path / "c.html").read_text()
    assert "Cross-validation predicted with 2d: openvino, bfloat16; torch, bfloat16." in text
