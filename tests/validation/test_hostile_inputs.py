"""A corpus of hostile raw datasets: each one gets its exact problems, never a traceback.

Every dataset is built in tmp_path from the small valid one of ``conftest.py`` and broken in
one way: file names that are not UTF-8, links that loop or dangle, folders named like
images, headers that declare far more voxels than the file holds, dataset.json files that
are not JSON as segflow reads it, label values no segmentation can hold. A few run the
command line in a subprocess to check the exit status and that stderr holds no traceback.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segflow.errors import DatasetError, Problem, SegflowError
from segflow.io.atomic import write_json
from segflow.io.dataset import MAX_LABEL_VALUE, load_dataset_json, read_dataset_json_file
from segflow.io.image import ImageReadError, read_image, read_image_header, write_image
from segflow.validation import validate_dataset

REPO = Path(__file__).resolve().parents[2]


def _cli(dataset: Path | bytes, out: Path | bytes) -> subprocess.CompletedProcess[bytes]:
    """``python -m segflow validate-dataset`` in a subprocess; bytes paths are passed as is."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "segflow", "validate-dataset", "--dataset", dataset,
         "--out", out],
        capture_output=True,
        env=env,
        timeout=120,
    )  # fmt: skip


def _assert_clean_failure(run: subprocess.CompletedProcess[bytes]) -> str:
    stderr = run.stderr.decode("utf-8", "backslashreplace")
    assert run.returncode == 1, stderr
    assert "Traceback" not in stderr
    return stderr


def _mha_header(path: Path) -> tuple[bytes, bytes]:
    head, sep, data = path.read_bytes().partition(b"ElementDataFile = LOCAL\n")
    return head, sep + data


# --- 1. names that are not UTF-8 -----------------------------------------------------------


def test_file_name_not_utf8_is_one_problem_and_the_rest_is_checked(tiny, tmp_path):
    folder = os.fsencode(tiny.root / "imagesTr")
    with open(folder + b"/bad\xff_0000.nii.gz", "wb") as fh:
        fh.write(tiny.image("case_000").read_bytes())
    tiny.label("case_001").unlink()
    run = _cli(tiny.root, tmp_path / "report.json")
    stderr = _assert_clean_failure(run)
    assert "basic_string" not in stderr
    assert stderr.splitlines()[-3:] == [
        "  - imagesTr/bad\\xff_0000.nii.gz: the file name is not valid UTF-8 (undecodable bytes "
        "shown as \\xNN); rename it: SimpleITK and the workflow need UTF-8 names",
        "  - labelsTr/case_001.nii.gz: label file missing: case 'case_001' has image "
        "imagesTr/case_001_0000.nii.gz but no label",
        "  - dataset.json: numTraining is 3 but imagesTr/ and labelsTr/ hold 4 training case(s)",
    ]


def test_read_image_refuses_a_non_utf8_path_instead_of_aborting(tmp_path):
    path = os.fsencode(tmp_path) + b"/caf\xe9.nii.gz"
    write_image(tmp_path / "ok.nii.gz", np.zeros((2, 3, 4), np.uint8), (1.0, 1.0, 1.0))
    os.rename(tmp_path / "ok.nii.gz", path)
    with pytest.raises(ImageReadError) as info:
        read_image(os.fsdecode(path))
    assert str(info.value.problems[0]) == (
        f"{tmp_path}/caf\\xe9.nii.gz: the path is not valid UTF-8 (undecodable bytes shown "
        "as \\xNN); SimpleITK cannot open it: rename the file or folder"
    )
    with pytest.raises(SegflowError, match="not valid UTF-8"):
        write_image(os.fsdecode(path), np.zeros((2, 3), np.uint8), (1.0, 1.0))


def test_dataset_folder_not_utf8(tiny, tmp_path):
    moved = os.fsencode(tmp_path) + b"/raw\xfe"
    os.rename(tiny.root, moved)
    stderr = _assert_clean_failure(_cli(moved, tmp_path / "report.json"))
    assert f"{tmp_path}/raw\\xfe: the path is not valid UTF-8" in stderr


# --- 4. label values declared far beyond the data ------------------------------------------


@pytest.mark.parametrize("value", [2**40, 50_000_000, MAX_LABEL_VALUE + 1])
def test_huge_label_value_is_refused_at_once(tiny, problems_of, value):
    tiny.write_json(labels={"background": 0, "anterior": 1, "posterior": value})
    start = time.perf_counter()
    problems = problems_of(tiny)
    assert time.perf_counter() - start < 10
    assert problems == [
        f"dataset.json: label 'posterior' has the value {value}; label values must be 0 to "
        "32767 (segmentations are stored as 16-bit integers)"
    ]


def test_missing_label_values_are_counted_not_listed(tiny, problems_of):
    tiny.write_json(labels={"background": 0, "anterior": 1, "posterior": 2, "far": 30000})
    problems = problems_of(tiny)
    assert problems[0] == (
        "dataset.json: label values must be consecutive integers 0, 1, 2, ...; declared: "
        "0, 1, 2, 30000; missing: 3, 4, 5, 6, 7, 8, 9, 10, ... (29997 values)"
    )
    assert sum(len(p) for p in problems) < 2000


def test_many_bad_entries_make_a_short_report(tiny, problems_of):
    tiny.write_json(
        channel_names={f"x{i}": "CT" for i in range(100_000)},
        labels={"background": 0} | {f"l{i}": -i for i in range(1, 100_000)},
    )
    problems = problems_of(tiny)
    assert len(problems) == 18
    assert problems[8] == "dataset.json: ... and 99992 more such 'channel_names' entries"
    assert problems[9] == (
        "dataset.json: label 'l1' has the value -1; label values must be 0 to 32767 "
        "(segmentations are stored as 16-bit integers)"
    )
    assert problems[17] == "dataset.json: ... and 99991 more such 'labels' entries"


# --- 5. tracebacks before: link loops, deep JSON, odd channel keys, --out a folder ----------


def test_symbolic_link_loop(tiny, problems_of):
    images = tiny.root / "imagesTr"
    os.symlink("loop_b_0000.nii.gz", images / "loop_a_0000.nii.gz")
    os.symlink("loop_a_0000.nii.gz", images / "loop_b_0000.nii.gz")
    assert problems_of(tiny)[:2] == [
        "imagesTr/loop_a_0000.nii.gz: symbolic link loop (a symbolic link to "
        "loop_b_0000.nii.gz); expected an image file",
        "imagesTr/loop_b_0000.nii.gz: symbolic link loop (a symbolic link to "
        "loop_a_0000.nii.gz); expected an image file",
    ]


def test_images_folder_that_is_a_link_loop(tiny, problems_of):
    images = tiny.root / "imagesTr"
    images.rename(tiny.root / "moved")
    os.symlink("imagesTr", images)
    assert problems_of(tiny)[0] == (
        "imagesTr: is a broken symbolic link or a link loop (to imagesTr); the training "
        "images belong in imagesTr/"
    )


def test_self_loop_as_dataset_json(tiny, problems_of):
    (tiny.root / "dataset.json").unlink()
    os.symlink("dataset.json", tiny.root / "dataset.json")
    assert problems_of(tiny) == [
        "dataset.json: is a symbolic link loop; expected the dataset's JSON file"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 100_000 + "]" * 100_000, "not usable JSON: nested too deeply"),
        (
            '{"name": ' + "[" * 40 + "]" * 40 + "}",
            "nested more than 32 levels deep; a dataset.json needs a few",
        ),
    ],
)
def test_deeply_nested_dataset_json(tiny, problems_of, text, expected):
    (tiny.root / "dataset.json").write_text(text)
    assert problems_of(tiny) == [f"dataset.json: {expected}"]


@pytest.mark.parametrize("key", ["²", "٣", "01", "-1", " 0", "10000"])
def test_channel_key_that_is_not_a_plain_index(tiny, problems_of, key):
    tiny.write_json(channel_names={key: "MRI"})
    assert problems_of(tiny) == [
        f"dataset.json: 'channel_names' entry {key!r}: 'MRI' must map a channel index "
        '"0", "1", ... "9999" (plain digits) to a name'
    ]


def test_out_naming_an_existing_folder_fails_before_the_work(tiny, tmp_path):
    (tmp_path / "taken").mkdir()
    tiny.image("case_000").write_bytes(b"")  # would be a problem, if validation ran
    stderr = _assert_clean_failure(_cli(tiny.root, tmp_path / "taken"))
    assert stderr.strip().splitlines() == [
        f"segflow validate-dataset: error: cannot write {tmp_path / 'taken'}",
        f"  - {tmp_path / 'taken'}: is a folder; expected the name of a file to write",
    ]
    with pytest.raises(SegflowError, match="is a folder"):
        write_json(tmp_path / "taken", {})


# --- 6. misleading messages before --------------------------------------------------------


def test_upper_case_file_ending_in_dataset_json(tiny, problems_of):
    tiny.write_json(file_ending=".NII.GZ")
    assert problems_of(tiny) == [
        "dataset.json: 'file_ending' '.NII.GZ' must be lower case: '.nii.gz' (and the files "
        "named with it)"
    ]


def test_upper_case_file_ending_in_dataset_json_and_the_files(tiny, problems_of):
    """The files follow dataset.json's '.NII.GZ': the lines quote them as they are, and no
    'no training cases' line follows."""
    for path in sorted((tiny.root / "imagesTr").iterdir()) + sorted(
        (tiny.root / "labelsTr").iterdir()
    ):
        path.rename(path.with_name(path.name.replace(".nii.gz", ".NII.GZ")))
    tiny.write_json(file_ending=".NII.GZ")
    assert problems_of(tiny) == [
        "dataset.json: 'file_ending' '.NII.GZ' must be lower case: '.nii.gz' (and the files "
        "named with it)",
        *(
            f"{folder}/{stem}.NII.GZ: file ending '.NII.GZ' (dataset.json's file_ending) must "
            f"be lower case; rename it to {stem}.nii.gz"
            for folder, suffix in (("imagesTr", "_0000"), ("labelsTr", ""))
            for stem in (f"case_00{i}{suffix}" for i in range(3))
        ),
    ]


def test_upper_case_ending_of_a_file(tiny, problems_of):
    tiny.image("case_001").rename(tiny.root / "imagesTr" / "case_001_0000.NII.GZ")
    assert problems_of(tiny) == [
        "imagesTr/case_001_0000.NII.GZ: file ending '.NII.GZ' differs in letter case from "
        "dataset.json file_ending '.nii.gz'; rename it to case_001_0000.nii.gz"
    ]


def test_folder_named_like_an_image_or_a_label(tiny, problems_of):
    tiny.image("case_001").unlink()
    tiny.image("case_001").mkdir()
    tiny.label("case_002").unlink()
    tiny.label("case_002").mkdir()
    assert problems_of(tiny) == [
        "imagesTr/case_001_0000.nii.gz: is a folder, not a file; expected an image file by "
        "this name",
        "labelsTr/case_002.nii.gz: is a folder, not a file; expected an image file by this name",
    ]


def test_dataset_json_that_is_a_folder(tiny, problems_of):
    (tiny.root / "dataset.json").unlink()
    (tiny.root / "dataset.json").mkdir()
    assert problems_of(tiny) == ["dataset.json: is a folder; expected the dataset's JSON file"]
    with pytest.raises(DatasetError) as info:
        load_dataset_json(tiny.root / "dataset.json")
    assert info.value.problems[0].message == "is a folder; expected the dataset's JSON file"


def test_singular_direction_gets_itks_reason(make_dataset, problems_of):
    dataset = make_dataset(ending=".mha")
    head, data = _mha_header(dataset.image("case_001"))
    head = head.replace(
        b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 1 0 0 0 0 1"
    )
    dataset.image("case_001").write_bytes(head + data)
    assert problems_of(dataset) == [
        "imagesTr/case_001_0000.mha: cannot be read as an image: Bad direction, determinant "
        "is 0. Refusing to change direction from 1 0 0 0 1 0 0 0 1 to 1 1 0 0 0 0 0 0 1"
    ]


# --- 7. every problem at once, dataset.json broken or not ----------------------------------


def test_a_bad_key_does_not_hide_the_file_problems(tiny, problems_of):
    tiny.write_json(labels={"background": 0, "anterior": "one"}, numTraining="3")
    (tiny.root / "imagesTr" / "notes.txt").write_text("protocol")
    tiny.label("case_001").unlink()
    tiny.image("case_002").write_bytes(b"not an image")
    assert problems_of(tiny) == [
        "dataset.json: label 'anterior' must be an integer (or a list of integers for a "
        "region), found 'one'",
        "dataset.json: 'numTraining' must be a non-negative integer, found '3'",
        "imagesTr/notes.txt: stray file: imagesTr/ must only hold image files named "
        "<case>_<XXXX>.nii.gz (XXXX: the 4-digit channel index)",
        "labelsTr/case_001.nii.gz: label file missing: case 'case_001' has image "
        "imagesTr/case_001_0000.nii.gz but no label",
        "imagesTr/case_002_0000.nii.gz: cannot be read as an image: the file is not "
        "recognized as a NIFTI file",
    ]


def test_key_given_twice_uses_neither_value(tiny, problems_of):
    text = (tiny.root / "dataset.json").read_text()
    (tiny.root / "dataset.json").write_text(
        text.replace('"labels": {', '"labels": {"background": 0}, "labels": {', 1)
    )
    assert problems_of(tiny) == [
        "dataset.json: key 'labels' appears more than once in one object; keys must be unique"
    ]


# --- hostile image files ---------------------------------------------------------------------


def test_header_declaring_far_more_voxels_than_the_file_holds(make_dataset, problems_of):
    dataset = make_dataset(ending=".nii")
    raw = bytearray(dataset.image("case_001").read_bytes())
    raw[42:48] = struct.pack("<3h", 30000, 30000, 30000)
    dataset.image("case_001").write_bytes(bytes(raw))
    assert problems_of(dataset) == [
        "imagesTr/case_001_0000.nii: the header declares 108,000,000,000,000 bytes of voxels "
        "(shape (30000, 30000, 30000)) but the data on disk is 712 bytes, more than 1100:1 "
        "compression can hold: a corrupt header or a decompression bomb"
    ]


def test_gzip_bomb_is_refused_before_decompression(tmp_path):
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 4000, 4000, 4000, 1, 1, 1, 1)
    struct.pack_into("<2h", header, 70, 2, 8)  # uint8
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb") as fh:  # 64 GB of zeros would follow; 1 MB is enough here
        fh.write(bytes(header) + b"\0" * 4 + b"\0" * (1 << 20))
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match=r"declares 64,000,000,000 bytes of voxels"):
        read_image(path)
    assert time.perf_counter() - start < 2


def test_mha_declaring_far_more_voxels(make_dataset, problems_of):
    dataset = make_dataset(ending=".mha")
    head, data = _mha_header(dataset.label("case_000"))
    dataset.label("case_000").write_bytes(
        head.replace(b"DimSize = 5 6 3", b"DimSize = 5000 6000 3000") + data
    )
    [problem] = problems_of(dataset)
    assert problem.startswith(
        "labelsTr/case_000.mha: the header declares 90,000,000,000 bytes of voxels "
        "(shape (5000, 6000, 3000)) but the data on disk is "
    )


def test_detached_header_with_a_missing_data_file(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.uint8)), str(tmp_path / "a.mhd"))
    (tmp_path / "a.raw").unlink()
    with pytest.raises(ImageReadError) as info:
        read_image_header(tmp_path / "a.mhd")
    assert info.value.problems[0].message == "its data file a.raw: file does not exist"


def test_detached_nrrd_header_bounded_by_its_data_file(tmp_path):
    array = np.zeros((2, 3, 4), np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "a.nhdr"))
    assert read_image(tmp_path / "a.nhdr").shape == (2, 3, 4)
    header = (tmp_path / "a.nhdr").read_text()
    (tmp_path / "a.nhdr").write_text(header.replace("sizes: 4 3 2", "sizes: 4000 3000 2000"))
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "a.nhdr")
    assert info.value.problems[0].message == (
        "the header declares 48,000,000,000 bytes of voxels (shape (4000, 3000, 2000)) but the "
        "data on disk is 48 bytes, more than 1100:1 compression can hold: a corrupt header or "
        "a decompression bomb"
    )


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (
            b"ElementSpacing = 1 1 2",
            b"ElementSpacing = 1 0 2",
            "Zero-valued spacing is not supported",
        ),
        (
            b"ElementSpacing = 1 1 2",
            b"ElementSpacing = nan 1 2",
            "Zero-valued spacing is not supported",
        ),
        (
            b"TransformMatrix = 1 0 0 0 1 0 0 0 1",
            b"TransformMatrix = nan 0 0 0 1 0 0 0 1",
            "Bad direction",
        ),
    ],
)
def test_odd_geometry_in_a_header(make_dataset, problems_of, old, new, reason):
    dataset = make_dataset(ending=".mha")
    head, data = _mha_header(dataset.image("case_002"))
    assert old in head
    dataset.image("case_002").write_bytes(head.replace(old, new) + data)
    [problem] = problems_of(dataset)
    assert problem.startswith(f"imagesTr/case_002_0000.mha: cannot be read as an image: {reason}")


@pytest.mark.parametrize("value", [0.0, float("nan"), float("inf")])
def test_nifti_voxel_size_that_simpleitk_would_read_as_1mm(tiny, problems_of, value):
    path = tiny.label("case_002")
    volume = sitk.ReadImage(str(path))
    sitk.WriteImage(volume, str(path).replace(".nii.gz", ".nii"))
    raw = bytearray(Path(str(path).replace(".nii.gz", ".nii")).read_bytes())
    Path(str(path).replace(".nii.gz", ".nii")).unlink()
    struct.pack_into("<f", raw, 80, value)  # pixdim[1], the x voxel size
    path.write_bytes(gzip.compress(bytes(raw)))
    assert sitk.ReadImage(str(path)).GetSpacing()[0] == 1.0  # what SimpleITK makes of it
    assert problems_of(tiny) == [
        f"labelsTr/case_002.nii.gz: voxel size (pixdim) ({value}, 1.0, 2.0) in the header: 0, "
        "NaN and infinite sizes are read as 1 mm by SimpleITK; fix the header"
    ]
    with pytest.raises(ImageReadError, match="voxel size"):
        read_image_header(path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b""), "the file is empty (0 bytes)"),
        (
            lambda p: os.symlink("elsewhere.nii.gz", p),
            "broken symbolic link (a symbolic link to elsewhere.nii.gz): its target does not exist",
        ),
        (
            lambda p: os.symlink("..", p),
            "is a folder (a symbolic link to ..), not a file; expected an image file by this name",
        ),
        (os.mkfifo, "is not a regular file (a pipe, socket or device); expected an image file"),
    ],
    ids=["empty", "dangling-link", "link-to-folder", "fifo"],
)
def test_files_that_are_not_images(tiny, problems_of, make, expected):
    tiny.image("case_001").unlink()
    make(tiny.image("case_001"))
    assert problems_of(tiny) == [f"imagesTr/case_001_0000.nii.gz: {expected}"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_permissions(tiny, problems_of):
    tiny.label("case_000").chmod(0)
    assert problems_of(tiny) == ["labelsTr/case_000.nii.gz: cannot be read (Permission denied)"]


def test_links_to_files_are_valid_input(tiny, tmp_path):
    # The holdout feature builds datasets of links to the real files.
    linked = tmp_path / "linked"
    for folder in ("imagesTr", "labelsTr"):
        (linked / folder).mkdir(parents=True)
        for path in (tiny.root / folder).iterdir():
            os.symlink(path, linked / folder / path.name)
    os.symlink(tiny.root / "dataset.json", linked / "dataset.json")
    assert len(validate_dataset(linked)["training_cases"]) == 3


def test_non_integer_label_value(tiny, problems_of, helpers):
    label = helpers.label((3, 6, 5)).astype(np.float32)
    label[0, 0, 0] = 0.5
    helpers.volume(tiny.label("case_001"), label)
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: label values must be whole numbers, found [0.5]"
    ]


def test_float_label_value_beyond_any_integer(tiny, problems_of, helpers):
    label = helpers.label((3, 6, 5)).astype(np.float64)
    label[0, 0, 0] = 1e30
    helpers.volume(tiny.label("case_001"), label)
    assert problems_of(tiny) == [
        "labelsTr/case_001.nii.gz: label values [1e+30] are far beyond any label value "
        "(0 to 32767)"
    ]


# --- dataset.json as segflow reads it ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b'\xef\xbb\xbf{"name": "x"}',
            "starts with a byte-order mark; save it as UTF-8 without BOM",
        ),
        (
            b'{"name": "caf\xe9"}',
            "not UTF-8 text: byte 0xe9 on line 1 cannot be decoded; save the file as UTF-8",
        ),
        (b'{"numTraining": NaN}', "not valid JSON: NaN is not a JSON number (use a number)"),
        (
            b'{"numTraining": -Infinity}',
            "not valid JSON: -Infinity is not a JSON number (use a number)",
        ),
        (
            b'{"numTraining": 1' + b"0" * 5000 + b"}",
            "not usable JSON (Exceeds the limit (4300 "
            "digits) for integer string conversion: "
            "value has 5001 digits; use "
            "sys.set_int_max_str_digits() to increase "
            "the limit)",
        ),
        (
            b"{'name': 1}",
            "not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
        ),
    ],
    ids=["bom", "latin-1", "nan", "infinity", "long-int", "single-quotes"],
)
def test_dataset_json_that_is_not_json(tiny, problems_of, content, expected):
    (tiny.root / "dataset.json").write_bytes(content)
    assert problems_of(tiny) == [f"dataset.json: {expected}"]
    raw, problems = read_dataset_json_file(tiny.root / "dataset.json", "d.json")
    assert raw is None and problems == [Problem("d.json", expected)]


@pytest.mark.parametrize(
    ("value", "shown"), [(3.0, "3.0"), ("3", "'3'"), (True, "True"), (None, "None"), ([3], "[3]")]
)
def test_num_training_of_the_wrong_type(tiny, problems_of, value, shown):
    tiny.write_json(numTraining=value)
    assert problems_of(tiny) == [
        f"dataset.json: 'numTraining' must be a non-negative integer, found {shown}"
    ]


def test_name_must_be_a_string(tiny, problems_of):
    tiny.write_json(name={"a": 1})
    assert problems_of(tiny) == ["dataset.json: 'name' must be a string, found {'a': 1}"]


# --- 7. one case that wrecks every other (issue 30) -----------------------------------------


def _respace(dataset, case_id: str, spacing: tuple[float, float, float], split: str = "Tr"):
    """Rewrite a case's image and label with another spacing (same voxels)."""
    for path in (dataset.image(case_id, split=split), dataset.label(case_id, split=split)):
        if path.exists():
            image = sitk.ReadImage(str(path))
            image.SetSpacing(tuple(reversed(spacing)))
            sitk.WriteImage(image, str(path), useCompression=True)


def test_a_spacing_of_a_micrometre_among_millimetres(tiny, problems_of):
    _respace(tiny, "case_001", (1e-6, 1e-6, 1e-6))
    assert problems_of(tiny) == [
        "imagesTr/case_001_0000.nii.gz: case 'case_001': spacing (z, y, x) (1e-06, 1e-06, "
        "1e-06) mm resampled to the target spacing (2, 1, 1) mm (the median of the 3 training "
        "cases' spacings) gives shape (0, 0, 0): less than one voxel along an axis; is the "
        "spacing in its header in mm?"
    ]


def test_a_spacing_of_a_kilometre_among_millimetres(tiny, problems_of):
    _respace(tiny, "case_002", (1e6, 1e6, 1e6))
    assert problems_of(tiny) == [
        "imagesTr/case_002_0000.nii.gz: case 'case_002': spacing (z, y, x) (1e+06, 1e+06, "
        "1e+06) mm resampled to the target spacing (2, 1, 1) mm (the median of the 3 training "
        "cases' spacings) gives shape (1.5e+06, 6e+06, 5e+06): 4.5e+19 voxels, 1.68e+11 GiB for "
        "its 1 channel(s) in float32, beyond the bound of 1,073,741,824 voxels; is the spacing "
        "in its header in mm?"
    ]


def test_a_test_case_is_resampled_to_the_training_cases_spacing(make_dataset, problems_of):
    dataset = make_dataset(test_cases=1)
    _respace(dataset, "test_000", (2.0, 1e5, 1e5), split="Ts")
    [problem] = problems_of(dataset)
    assert problem.startswith(
        "imagesTs/test_000_0000.nii.gz: case 'test_000': spacing (z, y, x) (2, 100000, "
        "100000) mm resampled to the target spacing (2, 1, 1) mm"
    )


def test_a_dataset_in_metres_throughout_is_valid(tiny):
    for case_id in ("case_000", "case_001", "case_002"):
        _respace(tiny, case_id, (2e-3, 1e-3, 1e-3))
    assert len(validate_dataset(tiny.root)["training_cases"]) == 3


def _set_foreground(dataset, case_id: str, value: float) -> None:
    path = dataset.image(case_id)
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset.label(case_id))))
    array[label > 0] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), useCompression=True)


def test_intensities_no_scanner_gives_are_refused_in_any_channel(tiny, problems_of):
    _set_foreground(tiny, "case_001", 1e38)
    assert problems_of(tiny) == [
        "imagesTr/case_001_0000.nii.gz: image holds intensities up to 1e+38 in absolute value, "
        "beyond 1e+15: no scanner gives such values and the intensity statistics cannot be "
        "computed in float32; check the file (its data type, scale slope or a corrupt region)"
    ]


def test_a_ct_case_whose_range_dwarfs_the_others_is_refused(make_dataset, problems_of):
    ct = make_dataset(cases=4, channels=("CT",))
    _set_foreground(ct, "case_002", 1e9)
    [problem] = problems_of(ct)
    assert problem.startswith(
        "imagesTr/case_002_0000.nii.gz: case 'case_002' channel 0 (CT): intensities reach 1e+09 "
        "in absolute value, "
    )
    assert problem.endswith(
        "; CT normalization pools every case's intensities, so the other cases would become "
        "constant: check the file (its data type, scale slope or a corrupt region)"
    )


def test_an_mri_case_whose_range_dwarfs_the_others_is_a_warning(tiny, caplog):
    _set_foreground(tiny, "case_002", 1e9)
    report = validate_dataset(tiny.root)
    [warning] = [w for w in report["warnings"] if "case_002" in w]
    assert warning.startswith(
        "imagesTr/case_002_0000.nii.gz: case 'case_002' channel 0 (MRI): intensities reach 1e+09"
    )
    assert warning.endswith("; the channel is normalized per image, but check the file")


def test_a_test_case_id_snakemake_refuses_as_a_wildcard(make_dataset, problems_of):
    dataset = make_dataset(test_cases=1)
    case = "scan_" + "0" * 25  # Snakemake: PeriodicWildcardError in the predict rule
    dataset.image("test_000", split="Ts").rename(dataset.image(case, split="Ts"))
    assert problems_of(dataset) == [
        f"imagesTs/{case}_0000.nii.gz: case id '{case}' ends in '0' repeated 25 times, which "
        "Snakemake refuses as a wildcard (the workflow predicts each test case by its id); "
        "rename the case without 20 repeats at its end"
    ]
    # A training case's id is no wildcard; nineteen repeats are fine anywhere.
    dataset.image(case, split="Ts").rename(dataset.image("scan_" + "0" * 19, split="Ts"))
    dataset.image("case_001").rename(dataset.image("case_" + "1" * 30))
    dataset.label("case_001").rename(dataset.label("case_" + "1" * 30))
    assert len(validate_dataset(dataset.root)["training_cases"]) == 3


def test_the_median_of_the_other_cases_is_exact():
    from segflow.validation.checks import _median_of_others

    rng = np.random.default_rng(0)
    for n in range(1, 9):
        values = rng.integers(0, 5, n).astype(float)  # ties too
        expected = [np.median(np.delete(values, i)) if n > 1 else 0.0 for i in range(n)]
        np.testing.assert_array_equal(_median_of_others(values), expected)


def test_the_whole_corpus_in_one_dataset_is_one_report(tiny, problems_of, tmp_path):
    """Every hostile entry at once, with a broken dataset.json key: one report lists all."""
    tiny.add_case("case_003")
    tiny.add_case("case_004")
    tiny.write_json(labels={"background": 0, "anterior": 1, "posterior": 2**40}, numTraining=5)
    images = tiny.root / "imagesTr"
    with open(os.fsencode(images) + b"/x\xff_0000.nii.gz", "wb") as fh:
        fh.write(b"\0")
    os.symlink("loop_0000.nii.gz", images / "loop_0000.nii.gz")
    tiny.image("case_000").write_bytes(b"")
    tiny.image("case_001").unlink()
    tiny.image("case_001").mkdir()
    tiny.image("case_002").rename(images / "case_002_0000.NII.GZ")
    os.mkfifo(tiny.label("case_003").with_name("case_003.nii.gz.tmp"))
    tiny.label("case_003").unlink()
    os.rename(tiny.label("case_003").with_name("case_003.nii.gz.tmp"), tiny.label("case_003"))
    assert problems_of(tiny, workers=2) == [
        "dataset.json: label 'posterior' has the value 1099511627776; label values must be 0 "
        "to 32767 (segmentations are stored as 16-bit integers)",
        "imagesTr/case_001_0000.nii.gz: is a folder, not a file; expected an image file by "
        "this name",
        "imagesTr/loop_0000.nii.gz: symbolic link loop (a symbolic link to loop_0000.nii.gz); "
        "expected an image file",
        "imagesTr/x\\xff_0000.nii.gz: the file name is not valid UTF-8 (undecodable bytes "
        "shown as \\xNN); rename it: SimpleITK and the workflow need UTF-8 names",
        "imagesTr/case_002_0000.NII.GZ: file ending '.NII.GZ' differs in letter case from "
        "dataset.json file_ending '.nii.gz'; rename it to case_002_0000.nii.gz",
        "labelsTr/case_003.nii.gz: is not a regular file (a pipe, socket or device); expected "
        "an image file",
        "dataset.json: numTraining is 5 but imagesTr/ and labelsTr/ hold 7 training case(s)",
        "imagesTr/case_000_0000.nii.gz: the file is empty (0 bytes)",
    ]
