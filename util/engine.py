"""Inference engines: a batch of preprocessed pixels in; probabilities, logits and features out.

Every engine returns ``Outputs``: class probabilities, the logits (pre-softmax scores) and the
pooled feature vector the classifier reads; the out-of-domain verdict (util/domain.py) uses
the last two. For models whose last layer applies softmax inside a Dense layer (the original
PlantNet pair), the logits are recomputed from the features with that layer's weights.

* ``OpenVINOEngine`` runs an OpenVINO IR converted from the Keras model, in bf16 on CPUs
  that have it (AMX, AVX-512 BF16). The IR is converted once, in a child process so the
  serving process never imports TensorFlow, and cached under ``Settings.openvino_cache``.
* ``TensorFlowEngine`` runs the Keras model as one traced ``tf.function`` (no eager calls).

``create_engine`` picks the backend named by ``PLANTNET_BACKEND``; ``auto`` takes OpenVINO
when it is installed and falls back to TensorFlow.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from util.config import Settings
from util.model_dir import INT8_IR, Artifact, ModelLoadError, check_shapes, load_keras_model

log = logging.getLogger(__name__)
IR_NAME = "model.xml"
IR_FORMAT = "v2"  # bump when the exported graph changes (v2: probabilities, logits, features)
OUTPUT_NAMES = ("probabilities", "logits", "features")
Outputs = dict[str, np.ndarray]  # OUTPUT_NAMES -> N x ... float32 arrays, one row per image


class Engine(Protocol):
    name: str
    precision: str
    input_size: int

    def predict(self, batch: np.ndarray) -> Outputs:
        """Return probabilities, logits and features, one row per image of the float32 N x S x S x 3 batch."""


class TensorFlowEngine:
    name = "tensorflow"
    precision = "f32"

    def __init__(self, artifact: Artifact, threads: int = 0):
        if threads:
            _set_tensorflow_threads(threads)
        model = load_keras_model(artifact)
        self.input_size = int(model.input_shape[1])
        self._predict = serving_function(model, self.input_size)

    def predict(self, batch: np.ndarray) -> Outputs:
        return {name: tensor.numpy() for name, tensor in zip(OUTPUT_NAMES, self._predict(batch), strict=True)}


def _set_tensorflow_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process; keep what it has
        log.warning("TensorFlow threads were already set; PLANTNET_INFERENCE_THREADS ignored")


def serving_function(model, input_size: int):
    """Trace the model once as a graph with a free batch dimension: (probabilities, logits, features)."""
    import tensorflow as tf

    classifier = next(layer for layer in reversed(model.layers) if type(layer).__name__ == "Dense")
    kernel, bias = (tf.constant(w, tf.float32) for w in classifier.get_weights())
    with_features = type(model)(model.inputs, [model.outputs[0], classifier.input])

    def run(pixels):
        probabilities, features = with_features(pixels, training=False)
        features = tf.cast(features, tf.float32)
        return tf.cast(probabilities, tf.float32), tf.matmul(features, kernel) + bias, features

    spec = tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="pixels")
    return tf.function(run, input_signature=[spec])


class OpenVINOEngine:
    name = "openvino"

    def __init__(self, artifact: Artifact, settings: Settings):
        import openvino as ov

        core = ov.Core()
        self.precision = choose_precision(settings.precision, core, artifact)
        if self.precision == "int8":
            network = read_ir(core, int8_ir(artifact))
        else:
            network = cached_network(core, artifact, settings.openvino_cache)
        shape = network.inputs[0].get_partial_shape()
        self.input_size = check_shapes(
            artifact,
            tuple(d.get_length() if d.is_static else None for d in shape),
            tuple(d.get_length() if d.is_static else None for d in network.outputs[0].get_partial_shape()),
        )
        config = {
            # int8 layers run in int8 whatever the hint; the rest of an int8 IR runs in f32.
            "INFERENCE_PRECISION_HINT": "f32" if self.precision == "int8" else self.precision,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if settings.inference_threads:
            config["INFERENCE_NUM_THREADS"] = settings.inference_threads
        self._request = core.compile_model(network, "CPU", config).create_infer_request()

    def predict(self, batch: np.ndarray) -> Outputs:
        self._request.infer({0: batch})
        return {name: self._request.get_output_tensor(i).data.copy() for i, name in enumerate(OUTPUT_NAMES)}


def choose_precision(requested: str, core, artifact: Artifact) -> str:
    """``auto``: the model's int8 IR when it ships one (shipped only when it passed the agreement gate), else bf16
    where the CPU has it, else f32."""
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if requested == "auto":
        if (artifact.directory / INT8_IR).exists():
            return "int8"
        return "bf16" if "BF16" in capabilities else "f32"
    if requested == "bf16" and "BF16" not in capabilities:
        log.warning("this CPU has no bf16 support; running OpenVINO in f32")
        return "f32"
    return requested


def int8_ir(artifact: Artifact) -> Path:
    """The model directory's quantized IR; made by ``python -m training.quantize``, never at start-up."""
    ir = artifact.directory / INT8_IR
    if not ir.exists():
        raise ModelLoadError(f"{ir} is missing: PLANTNET_PRECISION=int8 needs python -m training.quantize first")
    return ir


def read_ir(core, ir: Path):
    """Read an IR; one ``ModelLoadError`` line (not a traceback) when OpenVINO cannot."""
    try:
        return core.read_model(ir)
    except RuntimeError as exc:
        raise ModelLoadError(f"{ir} cannot be read by OpenVINO: {last_line(exc)}") from None


def cached_network(core, artifact: Artifact, cache: Path):
    """Read the cached IR of ``artifact``; a damaged cache (a truncated model.bin) is converted again, once."""
    ir = openvino_ir(artifact, cache)
    try:
        return read_ir(core, ir)
    except ModelLoadError as exc:
        log.warning("the OpenVINO cache %s is damaged (%s): converting the model again", ir.parent, exc)
    try:
        shutil.rmtree(ir.parent)
    except OSError as exc:
        raise ModelLoadError(f"the OpenVINO cache {ir.parent} is damaged and cannot be removed: {exc}") from None
    return read_ir(core, openvino_ir(artifact, cache))


def last_line(exc: BaseException) -> str:
    """OpenVINO's exceptions carry a C++ trace; the last non-empty line says what is wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def openvino_ir(artifact: Artifact, cache: Path) -> Path:
    """Return the cached IR of ``artifact``, converting it in a child process on a cache miss."""
    ir = cache / f"{artifact.fingerprint}-{IR_FORMAT}" / IR_NAME
    if ir.exists():
        return ir
    log.info("converting %s to OpenVINO IR in %s (once; later starts reuse it)", artifact.files[0], ir.parent)
    command = [sys.executable, "-m", "util.export", str(artifact.directory), str(ir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    if done.returncode != 0 or not ir.exists():
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ModelLoadError(lines[-1] if lines else f"converting {artifact.files[0]} to OpenVINO failed")
    return ir


# Test-time views of an N x S x S x 3 batch: the photo, its mirror image, upside down, and both.
VIEWS = (
    lambda batch: batch,
    lambda batch: batch[:, :, ::-1],
    lambda batch: batch[:, ::-1],
    lambda batch: batch[:, ::-1, ::-1],
)


class ViewAveraged:
    """Test-time augmentation: scores every image in ``views`` orientations in one batch (that many times
    the work) and averages their probabilities. Logits and features stay the image's own: the in-domain
    verdict was calibrated on those."""

    def __init__(self, engine: Engine, views: int):
        self._engine = engine
        self._views = VIEWS[:views]
        self.name = f"{engine.name}+{views}views"  # what /health and the log report
        self.precision = engine.precision
        self.input_size = engine.input_size

    def predict(self, batch: np.ndarray) -> Outputs:
        count = len(batch)
        outputs = self._engine.predict(np.concatenate([view(batch) for view in self._views]))
        probabilities = outputs["probabilities"].reshape(len(self._views), count, -1).mean(axis=0)
        return {**{name: values[:count] for name, values in outputs.items()}, "probabilities": probabilities}


def create_engine(artifact: Artifact, settings: Settings) -> Engine:
    """The engine ``settings`` ask for, averaged over ``settings.test_time_views`` orientations."""
    engine = _backend(artifact, settings)
    return engine if settings.test_time_views == 1 else ViewAveraged(engine, settings.test_time_views)


def _backend(artifact: Artifact, settings: Settings) -> Engine:
    """Build the engine ``settings.backend`` names; ``auto`` prefers OpenVINO, falls back to TensorFlow."""
    if settings.backend in ("auto", "openvino"):
        try:
            return OpenVINOEngine(artifact, settings)
        except ImportError as exc:
            if settings.backend == "openvino":
                raise ModelLoadError("PLANTNET_BACKEND=openvino but the openvino package is not installed") from exc
            log.warning("openvino is not installed; serving with TensorFlow")
        except (OSError, RuntimeError) as exc:
            if settings.backend == "openvino" or isinstance(exc, ModelLoadError):
                raise
            log.warning("OpenVINO failed (%s); serving with TensorFlow", exc)
    return TensorFlowEngine(artifact, settings.inference_threads)
