"""util.bulk --ray on a real local Ray (2 CPUs, no dashboard): a folder and an s3:// prefix.

One Ray for the module (started as util.bulk starts it); each run reads the files as binary,
runs them through one engine actor and must write exactly what local mode writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    BULK_BUCKET,
    NOT_AN_IMAGE,
    SAMPLES,
    TINY_LABELS,
    assert_same_answer,
    bulk_s3_objects,
    leaf_samples,
    moto_s3,
    use_fake_aws,
)
from util import bulk

try:
    import ray
    import ray.data  # the [data] extra
except ImportError:
    pytest.skip(
        "Ray is not installed: .venv/bin/pip install -r requirements-ray.txt to run the --ray tests",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 on 127.0.0.1 with the same objects as tests/test_bulk.py."""
    with moto_s3(bulk_s3_objects()) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def local_ray(openvino_cache, tmp_path_factory, s3_endpoint):
    """A local Ray started the way util.bulk starts one, its workers in this environment: the shared
    OpenVINO cache (the actors convert nothing) and credentials for moto's S3 on 127.0.0.1."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PLANTNET_CACHE_DIR", str(openvino_cache))
    patch.delenv("PLANTNET_MODEL_DIR", raising=False)
    use_fake_aws(patch, tmp_path_factory.mktemp("aws"), s3_endpoint)
    bulk.start_ray(None)
    try:
        yield ray
    finally:
        ray.shutdown()
        patch.undo()


@pytest.fixture
def photos(tmp_path) -> Path:
    """The 13 leaf sample photos and one file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(SAMPLES.glob("*.jpg")):
        if path.name != "plantnet_original_sample.jpg":
            shutil.copy(path, folder / path.name)
    (folder / "broken.jpg").write_bytes(NOT_AN_IMAGE)
    return folder


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ray_writes_what_local_mode_writes(local_ray, photos, tmp_path, tiny_model_dir):
    on_ray, local = tmp_path / "ray.jsonl", tmp_path / "local.jsonl"
    common = ["--model", str(tiny_model_dir), "--no-progress"]
    assert bulk.main([str(photos), "--out", str(on_ray), "--ray", *common]) == 1
    assert ray.is_initialized()  # the module's Ray was used, not a new one
    assert bulk.main([str(photos), "--out", str(local), *common]) == 1
    ours, theirs = lines(on_ray), lines(local)
    assert len(ours) == len(leaf_samples()) + 1
    assert [item["source"] for item in ours] == [item["source"] for item in theirs]  # source order kept
    for a, b in zip(ours, theirs, strict=True):
        assert_same_answer(a, b)
    statuses = {Path(item["source"]).name: item["status"] for item in ours}
    assert statuses.pop("broken.jpg") == 415 and set(statuses.values()) == {200}
    assert {item["diagnosis"]["label"] for item in ours if item["status"] == 200} <= set(TINY_LABELS)


def test_ray_resume_reads_only_what_is_left(local_ray, photos, tmp_path, tiny_model_dir):
    out = tmp_path / "ray.jsonl"
    first = sorted(photos.glob("*.jpg"))[0]
    out.write_text(json.dumps({"source": str(first), "status": 200, "diagnosis": {"label": "kept"}}) + "\n")
    assert bulk.main([str(photos), "--out", str(out), "--ray", "--resume", "--model", str(tiny_model_dir)]) == 1
    found = lines(out)
    assert found[0]["diagnosis"] == {"label": "kept"}
    assert sorted(item["source"] for item in found[1:]) == sorted(str(p) for p in photos.glob("*.jpg") if p != first)


def test_ray_reads_an_s3_prefix(local_ray, tmp_path, tiny_model_dir):
    out = tmp_path / "ray.jsonl"
    assert bulk.main([f"s3://{BULK_BUCKET}/field-7/", "--out", str(out), "--ray", "--model", str(tiny_model_dir)]) == 1
    found = {item["source"]: item["status"] for item in lines(out)}
    names = sorted(name for name, _ in leaf_samples()[:3])
    assert found == {
        f"s3://{BULK_BUCKET}/field-7/broken.png": 415,
        **{f"s3://{BULK_BUCKET}/field-7/{n}": 200 for n in names},
    }
