"""util.bulk in local mode: folders and s3:// prefixes, the API's JSON per photo, statuses, --resume.

The tiny model keeps these fast; tests/test_routes_agree.py checks the shipped model across every route.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    BULK_BUCKET,
    NOT_AN_IMAGE,
    TINY_LABELS,
    assert_same_answer,
    bulk_s3_objects,
    leaf_samples,
    moto_s3,
    use_fake_aws,
)
from util import bulk


@pytest.fixture
def photos(tmp_path) -> Path:
    """Four leaf photos (one in a subfolder), a file that is not an image, and files bulk must not list."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    samples = leaf_samples()[:4]
    for name, data in samples[:3]:
        (folder / name).write_bytes(data)
    (folder / "sub" / samples[3][0]).write_bytes(samples[3][1])
    (folder / "broken.jpg").write_bytes(NOT_AN_IMAGE)
    (folder / "notes.txt").write_text("not listed: no image extension")
    (folder / ".hidden.jpg").write_bytes(samples[0][1])
    return folder


def run(*argv: str) -> int:
    return bulk.main([*argv, "--no-progress"])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_gives_one_line_per_photo_with_the_apis_json(photos, tmp_path, tiny_model_dir, bulk_env, diagnose):
    out = tmp_path / "results.jsonl"
    assert run(str(photos), "--out", str(out), "--model", str(tiny_model_dir), "--top-k", "2", "--workers", "2") == 1
    found = lines(out)
    expected = sorted(p for p in photos.rglob("*.jpg") if not p.name.startswith("."))
    assert [item["source"] for item in found] == [
        str(p) for p in sorted(expected, key=lambda p: p.relative_to(photos).parts)
    ]
    by_source = {item["source"]: item for item in found}
    broken = by_source.pop(str(photos / "broken.jpg"))
    assert broken["status"] == 415 and "not an image" in broken["message"] and "diagnosis" not in broken
    for source, item in by_source.items():
        assert item["status"] == 200 and "message" not in item
        api = diagnose.one(Path(source).read_bytes(), Path(source).name, top_k=2).get_json()
        assert_same_answer(item["diagnosis"], api)  # the API's JSON, field for field
        assert item["diagnosis"]["label"] in TINY_LABELS and len(item["diagnosis"]["top_k"]) == 2


def test_a_crop_hint_gives_the_apis_json_for_that_hint(photos, tmp_path, tiny_model_dir, bulk_env, diagnose):
    out = tmp_path / "results.jsonl"
    assert run(str(photos / "sub"), "--out", str(out), "--model", str(tiny_model_dir), "--crop", " tomato ") == 0
    (item,) = lines(out)
    api = diagnose.one(Path(item["source"]).read_bytes(), "leaf.jpg", crop="Tomato").get_json()
    assert item["diagnosis"]["crop"] == "Tomato" and item["diagnosis"]["species"] == "Tomato"
    assert_same_answer(item["diagnosis"], api)


def test_an_unknown_crop_is_a_usage_error_naming_the_known_ones(photos, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "x.jsonl"
    assert run(str(photos), "--out", str(out), "--model", str(tiny_model_dir), "--crop", "Banana") == bulk.EXIT_USAGE
    assert "'Banana'" in capsys.readouterr().err and not out.exists()


def test_resume_skips_answered_photos_and_retries_the_rest(photos, tmp_path, tiny_model_dir, bulk_env):
    out = tmp_path / "results.jsonl"
    first, second, third = sorted(str(p) for p in photos.glob("*.jpg") if p.name != "broken.jpg")[:3]
    earlier = [
        {"source": first, "status": 200, "diagnosis": {"label": "kept as it was"}},
        {"source": str(photos / "broken.jpg"), "status": 415, "message": "final: not tried again"},
        {"source": second, "status": 503, "message": "busy: tried again"},
    ]
    out.write_text("".join(json.dumps(item) + "\n" for item in earlier) + '{"source": "' + third + '", "sta')
    assert run(str(photos), "--out", str(out), "--model", str(tiny_model_dir), "--resume") == 0
    found = lines(out)  # the half-written last line is gone, not glued to the next one
    assert found[:3] == earlier
    redone = [item["source"] for item in found[3:]]
    assert sorted(redone) == sorted(
        {str(p) for p in photos.rglob("*.jpg") if not p.name.startswith(".")} - {first, str(photos / "broken.jpg")}
    )
    assert all(item["status"] == 200 for item in found[3:])
    assert run(str(photos), "--out", str(out), "--model", str(tiny_model_dir), "--resume") == 0
    assert len(lines(out)) == len(found)  # nothing left to do


def test_a_missing_source_is_an_unreadable_line_not_a_crash(tmp_path, tiny_model_dir, bulk_env, capsys):
    out = tmp_path / "results.jsonl"
    assert run(str(tmp_path / "no-such-folder"), "--out", str(out), "--model", str(tiny_model_dir)) == 1
    (item,) = lines(out)
    assert item["status"] is None and "no such file or folder" in item["message"]
    assert "failed: 1 x None" in capsys.readouterr().err


def test_the_progress_bar_and_summary_do_not_get_in_the_way(photos, tmp_path, tiny_model_dir, bulk_env, capsys):
    out = tmp_path / "results.jsonl"
    assert bulk.main([str(photos / "sub"), "--out", str(out), "--model", str(tiny_model_dir), "--progress"]) == 0
    assert len(lines(out)) == 1
    assert "1 photos in" in capsys.readouterr().err


def test_ray_missing_says_how_to_install_it(monkeypatch, tmp_path, photos):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SystemExit, match=r"pip install -r requirements-ray.txt"):
        bulk.main([str(photos), "--out", str(tmp_path / "x.jsonl"), "--ray"])
    assert not (tmp_path / "x.jsonl").exists()  # it said so before any work


def test_top_k_over_the_limit_is_a_usage_error(photos, tmp_path, capsys):
    assert bulk.main([str(photos), "--out", str(tmp_path / "x.jsonl"), "--top-k", "99"]) == bulk.EXIT_USAGE
    assert "PLANTNET_MAX_TOP_K" in capsys.readouterr().err


# --- S3, through moto's server on 127.0.0.1 -------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("moto.server")
    with moto_s3(bulk_s3_objects()) as endpoint:
        yield endpoint


@pytest.fixture
def aws(monkeypatch, tmp_path, s3_endpoint) -> str:
    """boto3's standard chain finds test credentials in the environment; AWS_ENDPOINT_URL points it at moto."""
    use_fake_aws(monkeypatch, tmp_path, s3_endpoint)
    return s3_endpoint


def test_an_s3_prefix_is_classified_like_a_folder(aws, tmp_path, tiny_model_dir, bulk_env):
    out = tmp_path / "results.jsonl"
    assert run(f"s3://{BULK_BUCKET}/field-7", "--out", str(out), "--model", str(tiny_model_dir)) == 1
    found = {item["source"]: item for item in lines(out)}
    names = sorted(name for name, _ in leaf_samples()[:3])
    assert sorted(found) == sorted(
        [f"s3://{BULK_BUCKET}/field-7/broken.png", *(f"s3://{BULK_BUCKET}/field-7/{n}" for n in names)]
    )
    assert found.pop(f"s3://{BULK_BUCKET}/field-7/broken.png")["status"] == 415
    assert all(item["status"] == 200 and item["diagnosis"]["label"] in TINY_LABELS for item in found.values())
