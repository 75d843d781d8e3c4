"""An exported model carries each fold's ONNX network: it survives export -> zip -> import,
predicts on OpenVINO and ONNX Runtime as PyTorch does, and a damaged or foreign one is
refused before any case."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile

import numpy as np
import pytest

from segflow.errors import SegflowError
from segflow.export import export_model, import_model
from segflow.inference.ensemble import load_predictor
from segflow.inference.options import PredictionOptions
from segflow.io.image import write_image

from .conftest import SHAPE

pytest.importorskip("onnx")

ONNX = "3d_fullres/fold_0/network.onnx"


@pytest.fixture(scope="module")
def imported(experiment, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_bundle")
    export_model(**experiment.export_arguments(output_dir=root / "model",
                                               zip_path=root / "model.zip"))  # fmt: skip
    return import_model(root / "model.zip", root / "imported"), root / "model.zip"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("onnx_image") / "case_0000.nii.gz"
    array = (100 + 40 * rng.standard_normal(SHAPE)).astype(np.int16)
    write_image(path, array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return path


def _predict(model, image, out, backend):
    predictor = load_predictor(model, configurations=["3d_fullres"])
    options = PredictionOptions(mirror_axes=None, device="cpu", backend=backend, threads=1)
    runtimes = predictor.prepare(options)
    return predictor.predict_files([image], out, options, mirroring=True), runtimes


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_imported_model_predicts_with_its_onnx_networks_as_torch_does(
    imported, image, tmp_path, backend, monkeypatch
):
    pytest.importorskip(backend)
    from segflow.inference import backends

    folder, _ = imported
    assert (folder / ONNX).is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["files"][ONNX] == hashlib.sha256((folder / ONNX).read_bytes()).hexdigest()

    def no_export(*args, **kwargs):
        raise AssertionError("the bundle's ONNX network should have been used")

    torch_segmentation, _ = _predict(folder, image, tmp_path / "torch.nii.gz", "torch")
    monkeypatch.setattr(backends, "export_onnx", no_export)
    segmentation, runtimes = _predict(folder, image, tmp_path / f"{backend}.nii.gz", backend)
    assert {(r.backend, r.precision) for r in runtimes} == {(backend, "float32")}
    # float32 logits agree to ~1e-5; only a voxel on a near-tie could change its label.
    assert np.mean(segmentation == torch_segmentation) >= 0.999


def test_a_tampered_onnx_file_is_refused_by_import(imported, tmp_path):
    _, zip_path = imported
    with zipfile.ZipFile(zip_path) as archive:
        entries = {i.filename: archive.read(i) for i in archive.infolist()}
    entries[ONNX] = entries[ONNX][: len(entries[ONNX]) // 2]
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(SegflowError) as err:
        import_model(bad, tmp_path / "out")
    assert f"{ONNX}: its sha256 differs from manifest.json" in str(err.value)
    assert not (tmp_path / "out").exists()


def _models_folder(imported, tmp_path):
    """A models/ folder (no manifest, no hash check) holding the bundle's 3d_fullres."""
    folder, _ = imported
    models = tmp_path / "models"
    shutil.copytree(folder / "3d_fullres", models / "3d_fullres")
    return models / "3d_fullres"


def test_a_truncated_onnx_file_is_named_before_any_case(imported, image, tmp_path):
    pytest.importorskip("onnxruntime")
    model = _models_folder(imported, tmp_path)
    onnx = model / "fold_0" / "network.onnx"
    onnx.write_bytes(onnx.read_bytes()[:5000])
    with pytest.raises(SegflowError) as err:
        _predict(model, image, tmp_path / "out.nii.gz", "onnxruntime")
    assert f"{onnx}: is truncated or not an ONNX model" in str(err.value)
    assert not (tmp_path / "out.nii.gz").exists()


def test_the_onnx_file_of_another_checkpoint_is_refused(imported, image, tmp_path):
    pytest.importorskip("onnxruntime")
    model = _models_folder(imported, tmp_path)
    shutil.copy(model / "fold_1" / "network.onnx", model / "fold_0" / "network.onnx")
    with pytest.raises(SegflowError) as err:
        _predict(model, image, tmp_path / "out.nii.gz", "onnxruntime")
    text = str(err.value)
    assert "does not match its checkpoint" in text and "fold_0/network.onnx" in text


def test_a_model_folder_without_onnx_is_converted_once_and_cached(
    imported, image, tmp_path, monkeypatch
):
    pytest.importorskip("onnxruntime")
    from segflow.inference import backends

    model = _models_folder(imported, tmp_path)
    for onnx in model.glob("fold_*/network.onnx"):
        onnx.unlink()
    cache = tmp_path / "cache"
    monkeypatch.setenv("SEGFLOW_CACHE_DIR", str(cache))
    exports = []
    real = backends.export_onnx
    monkeypatch.setattr(backends, "export_onnx", lambda *a, **k: exports.append(1) or real(*a, **k))
    first, _ = _predict(model, image, tmp_path / "a.nii.gz", "onnxruntime")
    assert len(exports) == 2  # one per fold, not per case or window
    sha = hashlib.sha256((model / "fold_0" / "checkpoint_final.pt").read_bytes()).hexdigest()
    assert (cache / "onnx" / f"{sha}.opset20.onnx").is_file()
    again, _ = _predict(model, image, tmp_path / "b.nii.gz", "onnxruntime")  # new networks
    assert len(exports) == 2  # read from the cache
    np.testing.assert_array_equal(first, again)
