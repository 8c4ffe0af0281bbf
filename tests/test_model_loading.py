"""Loading model artifacts: Keras 3 files and the original PlantNet Keras 2.4 pair."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

from tests.support import LEGACY_FIXTURE, sample_bytes, serving
from util import leaf
from util.config import Settings
from util.engine import OpenVINOEngine, TensorFlowEngine
from util.model_dir import ORIGINAL_LABELS, ModelLoadError, find_artifact, load_keras_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory):
    """The original architecture JSON, as users bring it, with weights generated for it here."""
    import tf_keras

    directory = tmp_path_factory.mktemp("legacy")
    architecture = LEGACY_FIXTURE / "inceptionModelArchitecture.json"
    shutil.copy(architecture, directory)
    model = tf_keras.models.model_from_json(architecture.read_text())
    tf_keras.utils.set_random_seed(3)
    model.set_weights(
        [
            np.random.default_rng(3).normal(0, 0.05, w.shape).astype(np.float32) if w.ndim > 1 else w
            for w in model.get_weights()
        ]
    )
    model.save_weights(directory / "inception_model_weights.h5")
    return directory


def test_legacy_pair_loads_through_tf_keras_with_the_original_labels(legacy_dir):
    artifact = find_artifact(legacy_dir)
    assert artifact.kind == "legacy"
    assert artifact.labels == tuple(ORIGINAL_LABELS.read_text().split("\n")[:38])
    assert artifact.labels[0] == "Strawberry_healthy" and len(artifact.labels) == 38
    model = load_keras_model(artifact)
    assert model.input_shape == (None, 256, 256, 3) and model.output_shape == (None, 38)


def test_legacy_engines_agree_with_the_keras_2_model(legacy_dir, openvino_cache):
    artifact = find_artifact(legacy_dir)
    pixels = np.stack([leaf.load_pixels(sample_bytes(n), 256) for n in ("apple_scab.jpg", "tomato_healthy.jpg")])
    expected = load_keras_model(artifact).predict(pixels, verbose=0)
    tensorflow = TensorFlowEngine(artifact).predict(pixels)["probabilities"]
    openvino = OpenVINOEngine(artifact, Settings(model_dir=legacy_dir, cache_dir=openvino_cache, precision="f32"))
    np.testing.assert_allclose(tensorflow, expected, atol=1e-5)
    np.testing.assert_allclose(openvino.predict(pixels)["probabilities"], expected, atol=1e-3)


def test_legacy_model_serves_requests(legacy_dir, openvino_cache):
    with serving(legacy_dir, openvino_cache) as app:
        r = app.test_client().post(
            "/Diagnosis/prediction", data={"image": (io.BytesIO(sample_bytes("apple_scab.jpg")), "leaf.jpg")}
        )
        assert r.status_code == 200, r.get_data(as_text=True)
        body = r.get_json()
        assert body["label"] in find_artifact(legacy_dir).labels
        assert body["model"] == {"name": "plantnet-original", "version": "keras-2.4"}


def test_labels_txt_beside_a_legacy_pair_wins(legacy_dir, tmp_path):
    for f in legacy_dir.iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "labels.txt").write_text("\n".join(f"Plant{i}_condition" for i in range(38)))
    assert find_artifact(tmp_path).labels[5] == "Plant5_condition"


def test_mislabelled_legacy_pair_is_refused_naming_the_labels_file(legacy_dir, tmp_path):
    for f in legacy_dir.iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "labels.txt").write_text("\n".join(f"Plant{i}_x" for i in range(37)))
    with pytest.raises(ModelLoadError, match=r"labels.txt lists 37 labels but .* has 38 outputs"):
        load_keras_model(find_artifact(tmp_path))


def test_legacy_architecture_without_weights_is_refused(tmp_path):
    shutil.copy(LEGACY_FIXTURE / "inceptionModelArchitecture.json", tmp_path)
    with pytest.raises(ModelLoadError, match=r"inception_model_weights\.h5 is missing"):
        find_artifact(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file" * 100])
def test_corrupt_legacy_weights_are_refused_naming_the_file(tmp_path, content):
    shutil.copy(LEGACY_FIXTURE / "inceptionModelArchitecture.json", tmp_path)
    (tmp_path / "inception_model_weights.h5").write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"inception_model_weights\.h5 cannot be loaded"):
        load_keras_model(find_artifact(tmp_path))


@pytest.mark.slow
def test_the_original_pair_gets_an_in_domain_calibration(legacy_dir, tmp_path, monkeypatch):
    """`python -m training.calibrate` works on the Keras 2.4 pair too (its logits come from its features)."""
    from tests.support import TINY_DATA, TINY_LABELS_TSV
    from training import calibrate
    from util.domain import DomainCheck
    from util.model_dir import find_artifact

    model = shutil.copytree(legacy_dir, tmp_path / "original")
    monkeypatch.setenv("PLANTNET_BACKEND", "tensorflow")
    calibrate.main([str(model), "--data", str(TINY_DATA), "--labels", str(TINY_LABELS_TSV), "--val-fraction", "0.25"])
    check = DomainCheck.for_artifact(find_artifact(model))
    assert check.available and 0.0 <= check.threshold <= 1.0
