"""Self-supervised pretraining (MoCo): the InfoNCE loss against hand values, the queue, a tiny
run that lowers its loss, and folds that start from its encoder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from segflow.errors import SegflowError
from segflow.io.image import write_image
from segflow.networks import NetworkVariant, build_network
from segflow.networks.zoo import ZooEncoder
from segflow.planning import Plans
from segflow.preprocessing.preprocessor import CaseSpec, preprocess_cases
from segflow.training.checkpoint import load_checkpoint
from segflow.training.contrastive import (
    MomentumContrast,
    ProjectedEncoder,
    deepest_width,
    encoder_of,
    pretrain_encoder,
    warm_start_batches,
)
from segflow.training.pretrained import load_pretrained_weights
from segflow.training.pretraining_settings import PretrainingSettings
from segflow.training.sampling import PatchSampler
from segflow.training.splits import make_splits
from tests.training.conftest import make_tiny_dataset, tiny_plans


class _Fixed(nn.Module):
    """An 'encoder' returning its input as constant (B, C, 2, 2) features."""

    def forward(self, x):
        return x[:, :, None, None].expand(-1, -1, 2, 2)


def _contrast(queue_size=4, dim=2, momentum=0.0):
    encoder = ProjectedEncoder(_Fixed(), dim, dim, ndim=2)
    with torch.no_grad():  # the projection: the identity (a ReLU between, inputs positive)
        first = torch.zeros(dim, dim * 4)
        first[:, ::4] = torch.eye(dim)  # the pooled features of each channel's first part
        encoder.projection[0].weight.copy_(first)
        encoder.projection[3].weight.copy_(torch.eye(dim))
        for layer in (encoder.projection[0], encoder.projection[3]):
            layer.bias.zero_()
    # Evaluation mode: the head's batch normalization scales by 1 / sqrt(1 + eps), which the
    # L2 normalization undoes.
    return MomentumContrast(encoder, queue_size, temperature=0.5, key_momentum=momentum).eval()


def test_infonce_against_hand_values():
    moco = _contrast()
    with torch.no_grad():
        moco.queue.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]]))
        moco.queue_filled.fill_(4)
    q = torch.tensor([[3.0, 0.0]])  # normalized: (1, 0)
    k = torch.tensor([[0.0, 2.0]])  # normalized: (0, 1)
    loss = moco(q, k)
    # Similarities: positive (1,0).(0,1) = 0; queue 1, 0, 0.6, 0.8; divided by 0.5.
    logits = torch.tensor([0.0, 1.0, 0.0, 0.6, 0.8]) / 0.5
    expected = -logits[0] + torch.logsumexp(logits, 0)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    # The key replaced the oldest entry of the queue.
    assert torch.allclose(moco.queue[0], torch.tensor([0.0, 1.0]))
    assert int(moco.queue_pointer) == 1


def test_the_queue_wraps_around():
    moco = _contrast(queue_size=3)
    for i in range(4):
        moco(torch.tensor([[1.0, 0.5]]), torch.tensor([[float(i + 1), 1.0]]))
    assert int(moco.queue_pointer) == 1
    # The 4th key overwrote the first slot.
    assert torch.allclose(
        moco.queue[0], torch.nn.functional.normalize(torch.tensor([4.0, 1.0]), dim=0)
    )


def test_a_batch_larger_than_the_queue_keeps_its_last_keys():
    moco = _contrast(queue_size=2)
    keys = torch.tensor([[1.0, 0.1], [2.0, 1.0], [1.0, 3.0]])
    moco(torch.ones(3, 2), keys)
    expected = torch.nn.functional.normalize(keys[1:], dim=1)
    assert torch.allclose(moco.queue, expected) and int(moco.queue_pointer) == 0


def test_empty_queue_slots_are_left_out_of_the_loss():
    moco = _contrast(queue_size=4)
    with torch.no_grad():
        moco.queue.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]]))
    # Nothing in the queue yet: the positive alone, loss 0.
    first = moco(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert float(first.detach()) == 0.0
    assert int(moco.queue_filled) == 1
    # One key in the queue, (0, 1): the second step compares against it only.
    loss = moco(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    logits = torch.tensor([1.0, 0.0]) / 0.5
    assert float(loss.detach()) == pytest.approx(float(-logits[0] + torch.logsumexp(logits, 0)))
    assert int(moco.queue_filled) == 2


def test_the_warm_start_fills_the_queue_only_up_to_its_size():
    moco = _contrast(queue_size=5)
    used = moco.fill_queue(torch.ones(2, 2) for _ in range(10))
    assert used == 3 and int(moco.queue_filled) == 5 and int(moco.queue_pointer) == 1


@pytest.mark.parametrize(
    ("epochs", "iterations", "fraction", "queue", "batch", "expected"),
    [
        (2, 5, 0.25, 1024, 2, 3),  # the run: 3 batches, not 512
        (50, 50, 0.25, 1024, 2, 512),  # the default budget: enough to fill the queue
        (2, 5, 0.0, 1024, 2, 0),  # MoCo: the queue fills as training goes
        (4, 4, 1.0, 16, 8, 2),
    ],
)
def test_the_warm_start_is_in_proportion_to_the_budget(
    epochs, iterations, fraction, queue, batch, expected
):
    settings = PretrainingSettings(
        epochs=epochs, iterations_per_epoch=iterations, queue_size=queue,
        queue_warm_start=fraction,
    )  # fmt: skip
    assert warm_start_batches(settings, batch) == expected


def test_a_warm_start_outside_zero_to_one_is_refused():
    with pytest.raises(SegflowError, match="queue_warm_start"):
        PretrainingSettings(queue_warm_start=1.5)


def test_the_key_encoder_follows_by_momentum():
    moco = _contrast(momentum=0.9)
    with torch.no_grad():
        moco.query.projection[0].weight.add_(1.0)
    before = moco.key.projection[0].weight.clone()
    moco(torch.ones(1, 2), torch.ones(1, 2))
    query = moco.query.projection[0].weight.detach()
    assert torch.allclose(moco.key.projection[0].weight, 0.9 * before + 0.1 * query)
    assert not any(p.requires_grad for p in moco.key.parameters())


def test_the_encoder_of_each_kind_of_network(tiny_experiment):
    plan = tiny_experiment.plans.configuration("3d_fullres")
    stn = build_network(plan, 1, 3, variant=NetworkVariant(spatial_transformer=True))
    assert encoder_of(stn) is stn.network.encoder  # the transformer is left out
    assert deepest_width(encoder_of(stn), 1, tuple(plan.patch_size)) == 16  # 4-8-16
    pytest.importorskip("monai")
    variant = NetworkVariant(architecture="UNetPlusPlus", spatial_transformer=True)
    zoo = build_network(plan, 1, 3, variant=variant)
    encoder = encoder_of(zoo)
    assert isinstance(encoder, ZooEncoder) and encoder.layers[0] is zoo.network.network.conv_0_0
    with pytest.raises(SegflowError, match="Conv3d is neither a U-Net of the plans nor"):
        encoder_of(nn.Conv3d(1, 1, 3))


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    """Four 32^3 cases of smooth random texture: patches that differ from each other (the
    tiny ellipsoids of the training fixture all look alike), preprocessed, batch 8."""
    root = tmp_path_factory.mktemp("textures")
    dataset = make_tiny_dataset()
    (root / "dataset.json").write_text(json.dumps(dataset.raw))
    data = tiny_plans(dataset).to_dict()
    data["configurations"]["3d_fullres"]["batch_size"] = 8
    plans = Plans.from_dict(data)
    (root / "plans.json").write_text(json.dumps(data))
    rng = np.random.default_rng(0)
    cases = []
    for i in range(4):
        image = gaussian_filter(rng.normal(size=(32, 32, 32)), 2.0) * 400 + 100
        paths = root / f"c{i}_0000.nii.gz", root / f"c{i}.nii.gz"
        write_image(paths[0], image.astype(np.float32), (1.0, 1.0, 1.0))
        write_image(paths[1], (image > 100).astype(np.uint8), (1.0, 1.0, 1.0))
        cases.append(CaseSpec(f"c{i}", (paths[0],), paths[1]))
    preprocess_cases(cases, plans, "3d_fullres", dataset, seed=0, out_dir=root / "pre")
    splits = make_splits([c.case_id for c in cases], 2, 1)
    (root / "splits.json").write_text(json.dumps(splits))
    return root


@pytest.fixture(scope="module")
def ssl_run(textures):
    settings = PretrainingSettings(
        epochs=8, iterations_per_epoch=8, queue_size=32, initial_lr=0.1, device="cpu",
        threads=1, num_workers=0,
    )  # fmt: skip
    return pretrain_encoder(
        plans_path=textures / "plans.json", configuration="3d_fullres",
        dataset_json=textures / "dataset.json", splits_path=textures / "splits.json",
        preprocessed_folder=textures / "pre", output_folder=textures / "ssl", settings=settings,
        fold=0,
    )  # fmt: skip


def test_a_tiny_ssl_run_lowers_its_loss(ssl_run):
    state = load_checkpoint(ssl_run)
    losses = [h["loss"] for h in state["history"]]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 1.0
    # The held-out pairs' loss is recorded; at this budget it stays near chance (ln 32).
    assert set(state["evaluation"]) == {"before", "after"}
    assert all(abs(v - math.log(32)) < 0.5 for v in state["evaluation"].values())
    assert (ssl_run.parent / "ssl_progress.png").stat().st_size > 0
    assert (ssl_run.parent / "ssl_progress.csv").read_text().startswith("epoch,loss")


def test_folds_start_from_the_pretrained_encoder(textures, ssl_run):
    state = load_checkpoint(ssl_run)
    plans = Plans.from_dict(json.loads((textures / "plans.json").read_text()))
    torch.manual_seed(1)
    network = build_network(plans.configuration("3d_fullres"), 1, 3)
    record = load_pretrained_weights(network, ssl_run, 1)
    own = network.state_dict()
    encoder = [k for k in own if k.startswith("encoder.")]
    assert encoder and all(torch.equal(own[k], state["network"][k]) for k in encoder)
    assert record["layers"] == len([k for k in own if not k.startswith("decoder.heads.")])


def test_a_zoo_networks_encoder_is_pretrained_and_its_folds_start_from_it(textures, tmp_path):
    pytest.importorskip("monai")
    variant = NetworkVariant(architecture="UNetPlusPlus")
    settings = PretrainingSettings(
        epochs=2, iterations_per_epoch=3, queue_size=16, device="cpu", threads=1, num_workers=0,
    )  # fmt: skip
    ssl = pretrain_encoder(
        plans_path=textures / "plans.json", configuration="3d_fullres",
        dataset_json=textures / "dataset.json", splits_path=textures / "splits.json",
        preprocessed_folder=textures / "pre", output_folder=tmp_path / "ssl", settings=settings,
        variant=variant, fold=1,
    )  # fmt: skip
    state = load_checkpoint(ssl)
    assert state["network_variant"]["architecture"] == "UNetPlusPlus"
    assert len(state["history"]) == 2 and all(math.isfinite(h["loss"]) for h in state["history"])
    plan = Plans.from_dict(json.loads((textures / "plans.json").read_text()))
    plan = plan.configuration("3d_fullres")
    torch.manual_seed(settings.seed)  # the pretraining's initial weights
    initial = build_network(plan, 1, 3, variant=variant).state_dict()
    weights = state["network"]
    # The backbone column (conv_0_0 to conv_4_0) was trained, the nested decoder (upcat_*)
    # was not.
    backbone = [k for k in weights if k.startswith("network.conv_")]
    decoder = [k for k in weights if k.startswith("network.upcat_")]
    assert backbone and decoder
    assert any(not torch.equal(weights[k], initial[k]) for k in backbone)
    assert all(torch.equal(weights[k], initial[k]) for k in decoder)
    torch.manual_seed(1)
    fold = build_network(plan, 1, 3, variant=variant)
    record = load_pretrained_weights(fold, ssl, 1)
    own = fold.state_dict()
    assert all(torch.equal(own[k], weights[k]) for k in backbone)
    heads = [k for k in own if k.startswith(fold.head_prefixes)]
    assert heads and record["layers"] == len(own) - len(heads)


def _test_images(root, count, rng):
    """``count`` texture images in ``root/imagesTs`` whose labels are not images at all: the
    pretraining must never read them."""
    (root / "imagesTs").mkdir()
    (root / "labelsTs").mkdir()
    entries = []
    for i in range(count):
        image = gaussian_filter(rng.normal(size=(32, 32, 32)), 2.0) * 400 + 100
        write_image(root / "imagesTs" / f"t{i}_0000.nii.gz", image.astype(np.float32), (1.0,) * 3)
        (root / "labelsTs" / f"t{i}.nii.gz").write_bytes(b"not an image")
        entries.append(
            {
                "case_id": f"t{i}",
                "images": [f"imagesTs/t{i}_0000.nii.gz"],
                "label": f"labelsTs/t{i}.nii.gz",
            }
        )
    return {"dataset": str(root), "training_cases": [], "test_cases": entries}


def test_test_images_join_the_pretraining_without_their_labels(textures, tmp_path, monkeypatch):
    report = tmp_path / "dataset_report.json"
    report.write_text(json.dumps(_test_images(tmp_path, 2, np.random.default_rng(5))))
    drawn = []
    next_batch = PatchSampler.next_batch

    def recording(self, rng=None):
        batch = next_batch(self, rng)
        drawn.append((self.folder.name, tuple(batch[2])))
        return batch

    monkeypatch.setattr(PatchSampler, "next_batch", recording)
    settings = PretrainingSettings(
        epochs=1, iterations_per_epoch=6, queue_size=16, device="cpu", threads=1,
        num_workers=0, test_images=True, seed=3,
    )  # fmt: skip
    out = tmp_path / "ssl"
    (out / ".test_images.killed").mkdir(parents=True)  # a killed run's, removed
    checkpoint = pretrain_encoder(
        plans_path=textures / "plans.json", configuration="3d_fullres",
        dataset_json=textures / "dataset.json", splits_path=textures / "splits.json",
        preprocessed_folder=textures / "pre", output_folder=out, settings=settings,
        dataset_report=report, fold=0,
    )  # fmt: skip
    state = load_checkpoint(checkpoint)
    # Fold 0 trains on c0 and c1 and validates on c2 and c3: its encoder never sees them.
    assert state["cases"] == {"fold": 0, "training": 2, "validation_excluded": 2, "test": 2}
    assert state["budget"]["warm_start_batches"] == 2 and state["budget"]["training_batches"] == 6
    assert state["settings"]["test_images"] is True
    # Every batch comes from one set, the fold's training images with probability 2/4: 12
    # batches (6 trained on, 2 warm-starting the queue, 4 held out). The preprocessed test
    # images are gone with the job.
    training = [cases for folder, cases in drawn if folder == "pre"]
    test = [cases for folder, cases in drawn if folder != "pre"]
    assert len(training) + len(test) == 12 and training and test
    assert all(set(c) <= {"c0", "c1"} for c in training)
    assert all(set(c) <= {"t0", "t1"} for c in test)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint_ssl.pt", "ssl_progress.csv", "ssl_progress.png",
    ]  # fmt: skip


def test_test_images_without_any_is_an_error_before_pretraining(textures, tmp_path):
    settings = PretrainingSettings(epochs=1, iterations_per_epoch=1, device="cpu", test_images=True)
    common = {
        "plans_path": textures / "plans.json", "configuration": "3d_fullres",
        "dataset_json": textures / "dataset.json", "splits_path": textures / "splits.json",
        "preprocessed_folder": textures / "pre", "output_folder": tmp_path / "ssl",
        "settings": settings, "fold": 0,
    }  # fmt: skip
    with pytest.raises(SegflowError, match="needs the dataset report"):
        pretrain_encoder(**common)
    report = tmp_path / "dataset_report.json"
    report.write_text(json.dumps({"dataset": str(tmp_path), "test_cases": []}))
    with pytest.raises(SegflowError, match="imagesTs has none") as err:
        pretrain_encoder(**common, dataset_report=report)
    assert "pretraining.test_images" in err.value.render()
    assert not (tmp_path / "ssl").exists()
