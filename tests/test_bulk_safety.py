"""Bulk classification survives its photos (issue 27, item 6): per-photo failures, size caps, no silent overwrite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import leaf_samples
from util import bulk, leaf


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in leaf_samples()[:4]:
        (folder / name).write_bytes(data)
    return folder


def run(*argv: str) -> int:
    return bulk.main([*argv, "--no-progress"])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_photo_that_fails_unexpectedly_is_recorded_and_the_run_goes_on(
    photos, tmp_path, tiny_model_dir, bulk_env, monkeypatch
):
    poisoned = sorted(photos.glob("*.jpg"))[1]
    poison = poisoned.read_bytes()
    real = leaf.load_pixels

    def crashing_decoder(data, *args, **kwargs):  # a decoder bug on one photo, not a format error
        if data == poison:
            raise RuntimeError("decoder crashed")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(leaf, "load_pixels", crashing_decoder)
    out = tmp_path / "results.jsonl"
    argv = [str(photos), "--out", str(out), "--model", str(tiny_model_dir), "--workers", "1", "--batch-size", "4"]
    assert run(*argv) == bulk.EXIT_FAILED  # the exit status says some failed
    by_source = {item["source"]: item for item in lines(out)}
    assert len(by_source) == 4
    failed = by_source.pop(str(poisoned))
    assert failed["status"] == 500 and "decoder crashed" in failed["message"]
    assert all(item["status"] == 200 for item in by_source.values())
    monkeypatch.setattr(leaf, "load_pixels", real)  # fixed: --resume retries only that photo
    assert run(*argv, "--resume") == bulk.EXIT_OK
    assert [item["status"] for item in lines(out) if item["source"] == str(poisoned)] == [500, 200]


def test_a_photo_over_the_size_limit_is_not_read(photos, tmp_path, tiny_model_dir, bulk_env, monkeypatch):
    monkeypatch.setenv("PLANTNET_MAX_UPLOAD_BYTES", str(1024 * 1024))
    big = photos / "huge.jpg"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    out = tmp_path / "results.jsonl"
    assert run(str(photos), "--out", str(out), "--model", str(tiny_model_dir)) == bulk.EXIT_FAILED
    (refused,) = [item for item in lines(out) if item["source"] == str(big)]
    assert refused["status"] is None and "over the 1,048,576-byte limit" in refused["message"]
    assert sum(item["status"] == 200 for item in lines(out)) == 4


def test_a_non_empty_output_needs_resume_or_force(photos, tmp_path, tiny_model_dir, bulk_env, capsys):
    out = tmp_path / "results.jsonl"
    out.write_text('{"source": "earlier work", "status": 200}\n')
    assert run(str(photos), "--out", str(out), "--model", str(tiny_model_dir)) == bulk.EXIT_USAGE
    assert "--resume" in capsys.readouterr().err and out.read_text().startswith('{"source": "earlier work"')
    assert run(str(photos), "--out", str(out), "--model", str(tiny_model_dir), "--force") == bulk.EXIT_OK
    assert len(lines(out)) == 4 and "earlier work" not in out.read_text()
