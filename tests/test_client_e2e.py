"""The `plantnet` command end to end: the installed console script against the real service.

The server is the Procfile's command on 127.0.0.1 serving the tiny model; the command runs as
its own process, exactly as a user types it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support import PREDICT, TINY_LABELS, Server, leaf_samples, model_env

pytestmark = pytest.mark.slow
PLANTNET = Path(sys.executable).with_name("plantnet")


@pytest.fixture(scope="module")
def server(tiny_model_dir, openvino_cache):
    if not PLANTNET.exists():
        pytest.skip(f"the client is not installed in this environment ({PLANTNET}): pip install './client[s3]'")
    process = Server(model_env(tiny_model_dir, openvino_cache))
    try:
        process.wait_healthy(180)
        yield process
    finally:
        process.stop()


@pytest.fixture
def leaves(tmp_path) -> Path:
    folder = tmp_path / "leaves"
    (folder / "field-2").mkdir(parents=True)
    samples = leaf_samples()[:3]
    for name, data in samples[:2]:
        (folder / name).write_bytes(data)
    (folder / "field-2" / samples[2][0]).write_bytes(samples[2][1])
    return folder


def plantnet(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PLANTNET), *argv], capture_output=True, text=True, timeout=180)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_health(server):
    done = plantnet("health", "--url", server.url)
    assert done.returncode == 0 and "ready" in done.stdout


def test_diagnose_a_folder_to_jsonl_then_resume(server, leaves, tmp_path):
    out = tmp_path / "out.jsonl"
    done = plantnet("diagnose", str(leaves), "--url", server.url, "--format", "jsonl", "-o", str(out), "--ordered")
    assert done.returncode == 0, done.stderr
    found = records(out)
    assert [Path(r["source"]).name for r in found] == sorted([p.name for p in leaves.glob("*.jpg")]) + [
        p.name for p in (leaves / "field-2").glob("*.jpg")
    ]
    assert all(r["ok"] and r["label"] in TINY_LABELS and r["error_status"] is None for r in found)
    for r in found:  # the same label the one-photo endpoint gives
        body = requests.post(
            f"{server.url}{PREDICT}", files={"image": ("leaf.jpg", Path(r["source"]).read_bytes())}, timeout=60
        ).json()
        assert r["label"] == body["label"] and r["confidence"] == pytest.approx(body["confidence"], abs=1e-4)

    again = plantnet("diagnose", str(leaves), "--url", server.url, "--format", "jsonl", "-o", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert len(records(out)) == len(found)  # nothing was diagnosed twice


def test_a_bad_photo_makes_the_exit_status_non_zero(server, leaves, tmp_path):
    (leaves / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "out.jsonl"
    done = plantnet("diagnose", str(leaves), "--url", server.url, "-o", str(out), "--format", "jsonl")
    assert done.returncode == 1
    by_name = {Path(r["source"]).name: r for r in records(out)}
    assert by_name.pop("broken.jpg")["error_status"] == 415
    assert len(by_name) == 3 and all(r["ok"] for r in by_name.values())
    assert "broken.jpg" in done.stderr  # the summary names the failed photo


def test_plant_and_model_against_the_real_service(server, leaves):
    photos = sorted(str(p) for p in leaves.rglob("*.jpg"))
    done = plantnet("plant", *photos, "--url", server.url, "--crop", "tomato", "--format", "json", "--top-k", "2")
    assert done.returncode == 0, done.stderr
    plant = json.loads(done.stdout)
    assert plant["crop"] == "Tomato" and plant["species"] == "Tomato" and plant["combined_from"] == 3
    assert [photo["source"] for photo in plant["photos"]] == photos
    assert all(photo["crop"] == "Tomato" for photo in plant["photos"])
    described = plantnet("model", "--url", server.url, "--format", "json")
    assert described.returncode == 0, described.stderr
    crops = {group["crop"] for group in json.loads(described.stdout)["crops"]}
    assert crops == {label.split("_")[0] for label in TINY_LABELS}
    unknown = plantnet("diagnose", photos[0], "--url", server.url, "--crop", "Banana", "--format", "jsonl")
    assert unknown.returncode == 1 and "Apple, Tomato" in json.loads(unknown.stdout)["error_message"]
