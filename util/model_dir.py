"""The model directory: the one owner of its layout. Find, read and write it; load the Keras model.

Two formats are served:

* ``model.keras`` (Keras 3), as written by train.py, with ``labels.txt`` and ``model.json``;
* the original PlantNet pair ``inceptionModelArchitecture.json`` + ``inception_model_weights.h5``
  saved by Keras 2.4, which Keras 3 cannot read, loaded through the Keras 2 API (``tf_keras``).

Nothing here imports TensorFlow until a Keras model is actually needed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

KERAS_FILE = "model.keras"
LEGACY_ARCHITECTURE = "inceptionModelArchitecture.json"
LEGACY_WEIGHTS = "inception_model_weights.h5"
LABELS_FILE = "labels.txt"
METADATA_FILE = "model.json"
INT8_IR = "openvino-int8/model.xml"  # post-training int8 IR (python -m training.quantize)
DOMAIN_FILE = "domain.npz"  # in-domain statistics (util/domain.py); its threshold is in model.json
# An int8 engine's logits and features differ enough from f32's that the verdict needs statistics of its own
# (measured on 2026-12-03: 5.6% instead of 2.6% of known leaves rejected with f32's): calibrated apart.
SEPARATELY_CALIBRATED = ("int8",)
EVALUATION_FILE = "evaluation.json"  # what the finishing measured (training/finish.py)
CARD_FILE = "MODEL.md"  # the model card, written last by the finishing
ORIGINAL_LABELS = Path(__file__).with_name("original_labels.txt")


def domain_calibration(precision: str) -> tuple[str, str]:
    """The statistics file and model.json key of the in-domain verdict for an engine of ``precision``."""
    if precision in SEPARATELY_CALIBRATED:
        return f"domain-{precision}.npz", f"in_domain_{precision}"
    return DOMAIN_FILE, "in_domain"


MODEL_NAME = "plantnet-inceptionv3"


class ModelLoadError(RuntimeError):
    """The model directory cannot be served; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Artifact:
    directory: Path
    kind: str  # "keras" or "legacy"
    files: tuple[Path, ...]  # the files that hold the network, first the one to name in errors
    labels: tuple[str, ...]
    labels_file: Path
    name: str
    version: str
    metadata: dict = field(default_factory=dict, compare=False)  # model.json: calibrations and more

    @property
    def fingerprint(self) -> str:
        """Hash the network's bytes, to key caches of converted models."""
        digest = hashlib.sha256()
        for path in self.files:
            with path.open("rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()[:16]


def find_artifact(directory: Path) -> Artifact:
    """Describe the model in ``directory`` without loading it; raise ModelLoadError if unusable."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"model directory {directory} does not exist")
    keras_file = directory / KERAS_FILE
    legacy = directory / LEGACY_ARCHITECTURE, directory / LEGACY_WEIGHTS
    metadata = _read_metadata(directory / METADATA_FILE)
    if keras_file.exists():
        kind, files = "keras", (keras_file,)
        labels_file = directory / LABELS_FILE
    elif legacy[0].exists():
        if not legacy[1].exists():
            raise ModelLoadError(f"{legacy[1]} is missing: the legacy architecture needs its weights file")
        kind, files = "legacy", legacy
        labels_file = directory / LABELS_FILE
        if not labels_file.exists():
            labels_file = ORIGINAL_LABELS
        metadata.setdefault("name", "plantnet-original")
        metadata.setdefault("version", "keras-2.4")
    else:
        raise ModelLoadError(f"{directory} holds neither {KERAS_FILE} nor {LEGACY_ARCHITECTURE} + {LEGACY_WEIGHTS}")
    return Artifact(
        directory=directory,
        kind=kind,
        files=files,
        labels=read_labels(labels_file),
        labels_file=labels_file,
        name=str(metadata.get("name", directory.resolve().name)),
        version=str(metadata.get("version", "unversioned")),
        metadata=metadata,
    )


def read_labels(path: Path) -> tuple[str, ...]:
    """Read one display label per line, in the model's output order."""
    if not path.exists():
        raise ModelLoadError(f"{path} is missing: it must list one label per model output")
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not labels:
        raise ModelLoadError(f"{path} lists no labels")
    if len(set(labels)) != len(labels):
        raise ModelLoadError(f"{path} lists a label twice")
    return labels


def read_metadata(directory: Path) -> dict:
    """The ``model.json`` of a model directory (name, version, input size, calibrations), or {}."""
    return _read_metadata(Path(directory) / METADATA_FILE)


def read_evaluation(directory: Path) -> dict:
    """What the finishing measured on the model in ``directory`` (``evaluation.json``), or {}."""
    return _read_metadata(Path(directory) / EVALUATION_FILE)


def write_metadata(directory: Path, metadata: dict) -> Path:
    """Replace ``model.json``; written to a temporary name first so a reader never sees half a file."""
    path = Path(directory) / METADATA_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def update_metadata(directory: Path, **fields) -> dict:
    """Merge ``fields`` into ``model.json`` and return the result."""
    metadata = {**read_metadata(directory), **fields}
    write_metadata(directory, metadata)
    return metadata


def save_model_dir(directory: Path, model, labels, metadata: dict) -> Artifact:
    """Write a servable model directory: ``model.keras``, ``labels.txt`` and ``model.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / KERAS_FILE)
    (directory / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
    write_metadata(directory, metadata)
    return find_artifact(directory)


def _read_metadata(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc


def load_keras_model(artifact: Artifact):
    """Load the network with the Keras that wrote it and check its output against the labels."""
    try:
        model = _load_legacy(artifact) if artifact.kind == "legacy" else _load_keras3(artifact)
    except ModelLoadError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{artifact.files[-1]} cannot be loaded: {reason}") from exc
    check_shapes(artifact, tuple(model.input_shape), tuple(model.output_shape))
    return model


def _load_keras3(artifact: Artifact):
    import keras

    return keras.saving.load_model(artifact.files[0], compile=False)


def _load_legacy(artifact: Artifact):
    import tf_keras

    architecture, weights = artifact.files
    try:
        model = tf_keras.models.model_from_json(architecture.read_text(encoding="utf-8"))
    except Exception as exc:
        raise ModelLoadError(f"{architecture} is not a Keras model architecture: {exc}") from exc
    model.load_weights(weights)
    return model


def check_shapes(artifact: Artifact, input_shape: tuple, output_shape: tuple) -> int:
    """Check the network takes square RGB images and has one output per label; return the input size."""
    if len(input_shape) != 4 or input_shape[3] != 3 or input_shape[1] != input_shape[2] or not input_shape[1]:
        raise ModelLoadError(f"{artifact.files[0]} takes input {input_shape}, not square RGB images")
    if output_shape[-1] != len(artifact.labels):
        raise ModelLoadError(
            f"{artifact.labels_file} lists {len(artifact.labels)} labels "
            f"but {artifact.files[0]} has {output_shape[-1]} outputs"
        )
    return int(input_shape[1])
