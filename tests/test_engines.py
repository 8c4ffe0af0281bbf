"""Backends agree: OpenVINO (bf16 and f32) against the TensorFlow graph, on real sample photos."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import SAMPLES, SHIPPED_MODEL
from util import leaf
from util.config import Settings
from util.engine import OpenVINOEngine, TensorFlowEngine, create_engine
from util.model_dir import find_artifact


def sample_batch(size: int) -> np.ndarray:
    return np.stack([leaf.load_pixels(p.read_bytes(), size) for p in sorted(SAMPLES.glob("*.jpg"))])


def compare(model_dir, cache, precision: str) -> tuple[float, float]:
    """Return (top-1 agreement, largest probability difference) of OpenVINO vs TensorFlow."""
    artifact = find_artifact(model_dir)
    reference = TensorFlowEngine(artifact)
    candidate = OpenVINOEngine(artifact, Settings(model_dir=model_dir, cache_dir=cache, precision=precision))
    batch = sample_batch(reference.input_size)
    expected, got = reference.predict(batch)["probabilities"], candidate.predict(batch)["probabilities"]
    agreement = float(np.mean(expected.argmax(1) == got.argmax(1)))
    return agreement, float(np.abs(expected - got).max())


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_agrees_with_tensorflow_on_the_tiny_model(tiny_model_dir, openvino_cache, precision):
    agreement, largest = compare(tiny_model_dir, openvino_cache, precision)
    print(f"tiny model, OpenVINO {precision}: top-1 agreement {agreement:.3f}, largest difference {largest:.5f}")
    assert largest < (1e-4 if precision == "f32" else 0.02)


def test_auto_backend_is_openvino_and_tensorflow_is_the_fallback(tiny_model_dir, openvino_cache):
    artifact = find_artifact(tiny_model_dir)
    assert create_engine(artifact, Settings(model_dir=tiny_model_dir, cache_dir=openvino_cache)).name == "openvino"
    forced = Settings(model_dir=tiny_model_dir, cache_dir=openvino_cache, backend="tensorflow")
    assert create_engine(artifact, forced).name == "tensorflow"


def test_tensorflow_engine_batches_equal_single_calls(tiny_model_dir):
    engine = TensorFlowEngine(find_artifact(tiny_model_dir))
    batch = sample_batch(engine.input_size)
    whole = engine.predict(batch)
    for name, values in whole.items():
        singles = np.concatenate([engine.predict(batch[i : i + 1])[name] for i in range(len(batch))])
        np.testing.assert_allclose(values, singles, atol=1e-5, err_msg=name)


@pytest.mark.slow  # TensorFlow runs the full InceptionV3 beside OpenVINO: half a minute each
@pytest.mark.shipped_model
@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_agrees_with_tensorflow_on_the_shipped_model(openvino_cache, precision):
    agreement, largest = compare(SHIPPED_MODEL, openvino_cache, precision)
    print(f"shipped model, OpenVINO {precision}: top-1 agreement {agreement:.3f}, largest difference {largest:.5f}")
    assert agreement >= 0.99
    assert largest < (1e-3 if precision == "f32" else 0.1)


@pytest.mark.parametrize("views", [2, 4])
def test_test_time_views_average_the_probabilities_of_each_orientation(tiny_model_dir, openvino_cache, views):
    artifact = find_artifact(tiny_model_dir)
    settings = Settings(model_dir=tiny_model_dir, cache_dir=openvino_cache, backend="tensorflow")
    plain = create_engine(artifact, settings)
    averaged = create_engine(artifact, Settings(**{**vars(settings), "test_time_views": views}))
    assert averaged.name == f"tensorflow+{views}views" and averaged.input_size == plain.input_size
    batch = sample_batch(plain.input_size)
    orientations = [batch, batch[:, :, ::-1], batch[:, ::-1], batch[:, ::-1, ::-1]][:views]
    expected = np.mean([plain.predict(np.ascontiguousarray(view))["probabilities"] for view in orientations], axis=0)
    got = averaged.predict(batch)
    np.testing.assert_allclose(got["probabilities"], expected, atol=1e-5)
    np.testing.assert_allclose(got["probabilities"].sum(1), 1.0, atol=1e-5)
    own = plain.predict(batch)  # the in-domain verdict's inputs stay the photo's own
    for name in ("logits", "features"):
        np.testing.assert_allclose(got[name], own[name], atol=1e-4, err_msg=name)


@pytest.mark.parametrize("raw", ["3", "0", "two"])
def test_test_time_views_other_than_1_2_or_4_are_refused(raw):
    with pytest.raises(ValueError, match="PLANTNET_TEST_TIME_VIEWS"):
        Settings.from_env({"PLANTNET_TEST_TIME_VIEWS": raw})
