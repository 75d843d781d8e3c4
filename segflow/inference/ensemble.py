"""The model that predicts: one configuration's folds, or the selected ensemble of
configurations, with its postprocessing.

Within a configuration the folds' logits are averaged on the preprocessed grid
(:func:`~segflow.inference.predictor.predict_case_logits`). Configurations preprocess the case
differently (spacing, 2D or 3D), so an ensemble of configurations averages their class
probabilities in the input's geometry, as model selection scored it
(:mod:`segflow.ensembling.selection`). Postprocessing (connected-component rules of
``postprocessing.json``) applies to the final label map; saved probabilities are those before
postprocessing.

A cascade stage predicts after its previous stage: the previous stage's folds segment the
case (exported to the input's geometry, as any prediction), that segmentation is brought onto
the cascade stage's preprocessed grid and joins the image as one-hot channels
(:mod:`segflow.preprocessing.previous_stage`), then the cascade stage's folds predict.

:func:`load_predictor` reads what ``segflow predict -m`` is given: an exported model folder
(``segflow export``: the selected configurations, folds and postprocessing), or a folder of
trained folds (``<results>/models`` or one configuration's folder), optionally with a
``selection.json`` and a ``postprocessing.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segflow.errors import Problem, SegflowError
from segflow.inference.backends import Runtime, prepare_runtime
from segflow.inference.export import (
    logits_to_segmentation,
    probabilities_path,
    probabilities_to_segmentation,
    write_probabilities,
    write_segmentation,
)
from segflow.inference.model import TrainedModel, load_model, model_path_problems
from segflow.inference.options import PredictionOptions
from segflow.inference.predictor import predict_case_logits, preprocess_for_prediction
from segflow.io.dataset import DatasetJson
from segflow.io.paths import access_reason, readable_path
from segflow.postprocessing.components import CONNECTIVITY
from segflow.preprocessing.previous_stage import (
    previous_stage_labels,
    to_next_stage_grid,
    with_previous_stage,
)

__all__ = [
    "Predictor",
    "load_predictor",
    "model_input",
    "model_options",
    "predict_model_segmentation",
]

logger = logging.getLogger(__name__)


#: The options of a predictor that nobody chose: PyTorch on the CPU, float32.
_DEFAULT_OPTIONS = PredictionOptions(mirror_axes=None, device="cpu")


def model_options(
    model: TrainedModel, options: PredictionOptions, mirroring: bool
) -> PredictionOptions:
    """``options`` with the model's mirror axes (those its training mirrored), or none."""
    return options.replace(mirror_axes=model.mirror_axes if mirroring else None)


def model_input(
    model: TrainedModel,
    images: Sequence[str | os.PathLike[str]],
    options: PredictionOptions = _DEFAULT_OPTIONS,
    *,
    mirroring: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The network input of ``model`` for raw channel files, and the case's properties: the
    preprocessed image, and for a cascade stage the previous stage's one-hot segmentation
    (predicted here, by the previous stage's folds) after it."""
    data, properties = preprocess_for_prediction(
        images, model.plans, model.configuration, model.dataset
    )
    if model.previous_stage is None:
        return data, properties
    segmentation = predict_model_segmentation(
        model.previous_stage, images, options, mirroring=mirroring
    )
    configuration = model.plans.configuration(model.configuration)
    on_grid = to_next_stage_grid(segmentation, properties, configuration)
    return with_previous_stage(data, on_grid, previous_stage_labels(model.dataset)), properties


def predict_model_segmentation(
    model: TrainedModel,
    images: Sequence[str | os.PathLike[str]],
    options: PredictionOptions = _DEFAULT_OPTIONS,
    *,
    mirroring: bool = True,
) -> np.ndarray:
    """One model's segmentation (its folds averaged) in the input's geometry, without
    postprocessing: what a previous stage passes on."""
    data, properties = model_input(model, images, options, mirroring=mirroring)
    with torch.inference_mode():
        logits = predict_case_logits(
            model.networks, data, model.plans, model.configuration,
            model_options(model, options, mirroring),
        )  # fmt: skip
    return logits_to_segmentation(
        logits, properties, model.plans, model.configuration, model.dataset
    )


@dataclass(frozen=True)
class Predictor:
    """Configurations (each with its folds) whose predictions are ensembled, and the
    postprocessing rules applied to the result."""

    models: tuple[TrainedModel, ...]
    postprocessing: tuple[Mapping[str, Any], ...] = field(default=())
    #: the components' connectivity of ``postprocessing`` ("face", or "full": nnU-Net's)
    connectivity: str = CONNECTIVITY

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a predictor needs at least one model")
        first = self.models[0].dataset
        for model in self.models[1:]:
            if (model.dataset.labels, model.dataset.num_channels, model.dataset.file_ending) != (
                first.labels, first.num_channels, first.file_ending,
            ):  # fmt: skip
                raise SegflowError(
                    "the configurations do not belong together",
                    [Problem(model.configuration, "was trained with other labels or channels "
                             f"than {self.models[0].configuration}")],
                )  # fmt: skip

    @property
    def dataset(self) -> DatasetJson:
        return self.models[0].dataset

    @property
    def name(self) -> str:
        """The models' names as the selection names a candidate (``2d__BL,2d__BL+GN``)."""
        from segflow.ensembling.selection import candidate_name

        return candidate_name([m.name for m in self.models])

    def describe(self) -> str:
        """Each model by its name (configuration and experiment) and folds, ``;`` between."""
        parts = [_describe(m) for m in self.models]
        rules = f", postprocessing {list(self.postprocessing)}" if self.postprocessing else ""
        ensemble = f"an ensemble of {len(parts)}: " if len(parts) > 1 else ""
        return ensemble + "; ".join(parts) + rules

    def prepare(self, options: PredictionOptions = _DEFAULT_OPTIONS) -> list[Runtime]:
        """Convert every network (previous stages' too) for the backend of ``options`` now,
        before any case: a backend that cannot run here or a damaged ONNX file is an error
        at once, and every fold is converted once. Returns the runtimes, networks in order."""
        runtimes = []
        models = list(self.models)
        while models:
            model = models.pop(0)
            patch = model.plans.configuration(model.configuration).patch_size
            for fold in model.folds:
                runtimes.append(
                    prepare_runtime(
                        fold.network, backend=options.backend, precision=options.precision,
                        device=options.device or "cpu", channels=fold.input_channels,
                        patch=patch, threads=options.threads,
                    )
                )  # fmt: skip
            if model.previous_stage is not None:
                models.append(model.previous_stage)
        return runtimes

    def predict_files(
        self,
        images: Sequence[str | os.PathLike[str]],
        output_file: str | os.PathLike[str],
        options: PredictionOptions = _DEFAULT_OPTIONS,
        *,
        mirroring: bool = True,
        save_probabilities: bool = False,
    ) -> np.ndarray:
        """Preprocess the channel files for each configuration, predict, ensemble,
        postprocess and write the segmentation (and the probabilities beside it).

        ``options``: how to predict (device, backend, precision, ...); each model mirrors
        over its own axes when ``mirroring``.

        Returns:
            the written label map ``original_shape``.

        Raises:
            ValueError: ``output_file`` is one of the inputs.
        """
        from segflow.postprocessing import apply_postprocessing

        target = Path(output_file).resolve()
        if any(Path(p).resolve() == target for p in images):
            raise ValueError(f"{output_file}: the output would overwrite an input image")
        need_probabilities = save_probabilities or len(self.models) > 1
        total = None
        properties = None
        segmentation = None
        for model in self.models:
            data, case_properties = model_input(model, images, options, mirroring=mirroring)
            properties = properties or case_properties
            with torch.inference_mode():
                logits = predict_case_logits(
                    model.networks, data, model.plans, model.configuration,
                    model_options(model, options, mirroring),
                )  # fmt: skip
            del data
            result = logits_to_segmentation(
                logits, case_properties, model.plans, model.configuration, model.dataset,
                return_probabilities=need_probabilities,
            )  # fmt: skip
            del logits
            if not need_probabilities:
                segmentation = result
                continue
            total = result[1] if total is None else np.add(total, result[1], out=total)
        if total is not None:
            total /= len(self.models)
            segmentation = probabilities_to_segmentation(total, self.dataset)
        segmentation = apply_postprocessing(segmentation, self.postprocessing, self.connectivity)
        if save_probabilities:
            write_probabilities(total, properties, probabilities_path(output_file))
        write_segmentation(segmentation, properties, output_file)
        return segmentation


def _describe(model: TrainedModel) -> str:
    text = f"{model.name} folds {[f.fold for f in model.folds]}"
    if model.previous_stage is not None:
        text += f" (after {_describe(model.previous_stage)})"
    return text


def _rules(
    postprocessing: str | os.PathLike[str] | Mapping[str, Any] | None,
) -> tuple[tuple, str]:
    """The rules of a ``postprocessing.json`` and their components' connectivity."""
    from segflow.postprocessing import load_postprocessing

    if postprocessing is None:
        return (), CONNECTIVITY
    if not isinstance(postprocessing, Mapping):
        postprocessing = load_postprocessing(postprocessing)
    return tuple(postprocessing["rules"]), str(postprocessing.get("connectivity", CONNECTIVITY))


def load_predictor(
    model_dir: str | os.PathLike[str],
    *,
    configurations: Sequence[str] | None = None,
    folds: Sequence[int] | None = None,
    selection: str | os.PathLike[str] | None = None,
    postprocessing: str | os.PathLike[str] | None = None,
    use_postprocessing: bool = True,
    device: str | torch.device = "cpu",
) -> Predictor:
    """The predictor a model folder describes.

    Args:
        model_dir: an exported model (``manifest.json``), ``<results>/models`` or one
            configuration's folder of ``fold_<k>/checkpoint_final.pt``.
        configurations: use these configurations (default: an exported model's selected
            ones, the selection's, or the folder's only one).
        folds: use these folds of each configuration (default: all there are, or the
            selection's).
        selection: a ``selection.json`` naming the configurations and folds.
        postprocessing: a ``postprocessing.json`` (an exported model brings its own).
        use_postprocessing: False ignores every postprocessing rule.
        device: where the networks go.

    Raises:
        SegflowError: every missing path at once (``model_dir``, ``selection``,
            ``postprocessing``); not a model folder, a malformed selection or
            postprocessing file, unknown configurations or folds, or configurations trained
            on different labels.
    """
    from segflow.ensembling import load_selection
    from segflow.export import is_bundle, load_bundle

    model_dir = Path(model_dir)
    problems = model_path_problems(model_dir)
    for what, path in (("selection.json", selection), ("postprocessing.json", postprocessing)):
        if path is None or isinstance(path, Mapping):
            continue
        reason = access_reason(Path(path))
        if reason is None and not Path(path).is_file():
            reason = "is not a file"
        if reason is not None:
            problems.append(Problem(readable_path(path), f"{reason}; expected a {what}"))
    if problems:
        raise SegflowError("cannot load the model", problems)
    rules: tuple = ()
    connectivity = CONNECTIVITY
    if is_bundle(model_dir):
        if selection is not None:
            raise SegflowError(
                "an exported model brings its own selection",
                [Problem(str(model_dir), "choose its configurations with -c, not --selection")],
            )
        bundle = load_bundle(model_dir)
        available = list(bundle.configurations)
        chosen = list(configurations) if configurations else available
        unknown = [c for c in chosen if c not in available]
        if unknown:
            raise SegflowError(
                "no such configuration",
                [Problem(str(model_dir), f"the exported model holds {', '.join(available)}, "
                                         f"not {', '.join(unknown)}")],
            )  # fmt: skip
        rules, connectivity = _rules(bundle.postprocessing)
    elif selection is not None:
        selected = load_selection(selection)["selected"]
        chosen = list(configurations) if configurations else selected["configurations"]
        folds = folds if folds is not None else selected["folds"]
    else:
        chosen = list(configurations) if configurations else [None]
    if postprocessing is not None:
        rules, connectivity = _rules(postprocessing)
    if len(set(chosen)) != len(chosen):
        raise SegflowError(f"configuration named twice: {chosen}")
    models = tuple(
        load_model(model_dir, configuration=c, folds=folds, device=device) for c in chosen
    )
    return Predictor(models, rules if use_postprocessing else (), connectivity)
