"""The ``plantnet_client`` package and ``plantnet`` command: protocol behaviour against a local HTTP double.

Nothing here loads a model: :class:`FakePlantNet` answers the API's contract with scripted replies.
End-to-end runs against the real service take ``Client(url)`` with that service's base URL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import plantnet_client  # from client/ (pytest's pythonpath), or installed with `pip install ./client[s3]`
import pytest
from plantnet_client import Client, Expander, InDomain, Photo, Result, SourceError, parse_retry_after
from plantnet_client.cli import already_done, main

from tests.fake_plantnet import MODEL, PLANT, PREDICTION, PREDICTIONS, FakePlantNet, label_of, photo_bytes, serving
from tests.support import free_port

CLIENT_DIR = Path(plantnet_client.__file__).resolve().parent.parent


def fast_client(url: str, **options) -> Client:
    options = {"retries": 3, "backoff": 0.01, "timeout": 10.0, **options}
    return Client(url, **options)


def write_photos(folder: Path, labels: list[str], ext: str = ".jpg") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, label in enumerate(labels):
        path = folder / f"p{n:03d}{ext}"
        path.write_bytes(photo_bytes(label, n))
        paths.append(path)
    return paths


# -- Client: one photo -------------------------------------------------------------------------
def test_diagnose_one_photo_gives_a_typed_result(url, fake, tmp_path):
    (path,) = write_photos(tmp_path, ["Tomato_Late blight"])
    with fast_client(url) as client:
        result = client.diagnose(path, top_k=2)
    assert result.ok and result.error_status is None and result.error_message is None
    assert result.source == str(path)
    assert (result.label, result.confidence) == ("Tomato_Late blight", 0.9)
    assert result.top_k == (("Tomato_Late blight", 0.9), ("Apple_scab", 0.07))
    assert (result.species, result.condition, result.healthy) == ("Tomato", "Late blight", False)
    assert result.in_domain == InDomain(known=True, score=0.8, threshold=0.5, available=True)
    assert result.known is True
    assert result.raw["an_extra_field_from_the_future"] == [1, 2, 3]
    assert fake.requests[-1] == {"path": PREDICTION, "filenames": [path.name], "top_k": "2"}
    with pytest.raises(AttributeError):
        result.label = "changed"  # frozen
    hash(result)


def test_a_base_url_with_a_path_prefix_is_kept(fake, tmp_path):
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    (path,) = write_photos(tmp_path, ["A_a"])
    behind_a_proxy = DispatcherMiddleware(FakePlantNet.json({"message": "wrong prefix"}, 404), {"/plantnet": fake})
    with serving(behind_a_proxy) as base, fast_client(base + "/plantnet/") as client:
        assert client.diagnose(path).label == "A_a"
        assert [r.label for r in client.diagnose_many([path])] == ["A_a"]
        assert client.health()


def test_diagnose_accepts_bytes_and_binary_files(url, tmp_path):
    (path,) = write_photos(tmp_path, ["Apple_healthy"])
    with fast_client(url) as client, path.open("rb") as stream:
        assert client.diagnose(path.read_bytes()).label == "Apple_healthy"
        from_stream = client.diagnose(stream)
    assert (from_stream.label, from_stream.source, from_stream.healthy) == ("Apple_healthy", str(path), True)


def test_out_of_domain_and_missing_fields_are_read_gracefully():
    unknown = Result.from_diagnosis(
        "x.jpg", {"label": "Unknown", "confidence": 0.2, "species": None, "in_domain": {"known": False}}
    )
    assert unknown.ok and unknown.known is False and unknown.species is None and unknown.healthy is None
    bare = Result.from_diagnosis("y.jpg", {"label": "Tomato_healthy", "top_k": [["Tomato_healthy", 1.0], "junk"]})
    assert bare.in_domain is None and bare.known is None and bare.top_k == (("Tomato_healthy", 1.0),)
    failed = Result.failure("z.jpg", "not an image", 415)
    assert not failed.ok and failed.to_record()["error_status"] == 415
    with pytest.raises(plantnet_client.PlantNetError, match="not an image"):
        failed.raise_for_error()


def test_a_failed_photo_is_a_result_not_an_exception(url, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with fast_client(url) as client:
        refused = client.diagnose(bad)
        missing = client.diagnose(tmp_path / "nope.jpg")
    assert (refused.ok, refused.error_status, refused.error_message) == (False, 415, "not an image")
    assert not missing.ok and missing.error_status is None and "no such file" in missing.error_message


def test_diagnose_refuses_a_folder_of_several_photos(url, tmp_path):
    write_photos(tmp_path, ["A_a", "B_b"])
    with fast_client(url) as client, pytest.raises(ValueError, match="diagnose_many"):
        client.diagnose(tmp_path)


# -- Client: many photos ---------------------------------------------------------------------------
def test_diagnose_many_groups_photos_into_requests_and_maps_each_result_to_its_source(url, fake, tmp_path):
    paths = write_photos(tmp_path, [f"Plant_{n % 7}" for n in range(70)])
    with fast_client(url) as client:
        results = list(client.diagnose_many([tmp_path], top_k=1, batch_size=32, concurrency=2))
    assert sorted(fake.sizes()) == [6, 32, 32]
    assert all(r["top_k"] == "1" for r in fake.requests)
    assert sorted(r.source for r in results) == sorted(map(str, paths))
    for result in results:
        assert result.ok and result.label == label_of(Path(result.source).read_bytes())


def test_diagnose_many_yields_in_source_order_when_ordered(url, fake, tmp_path):
    paths = write_photos(tmp_path, [f"Plant_{n}" for n in range(25)])
    with fast_client(url) as client:
        results = list(client.diagnose_many(paths, batch_size=4, concurrency=3, ordered=True))
    assert [r.source for r in results] == list(map(str, paths))
    assert sorted(fake.sizes()) == [1, 4, 4, 4, 4, 4, 4]


def test_one_bad_photo_never_fails_the_others(url, fake, tmp_path):
    paths = write_photos(tmp_path, ["A_x", "B_y", "C_z"])
    paths[1].write_bytes(b"\x00 not a photo")
    sources = [*paths, tmp_path / "missing.jpg"]
    with fast_client(url) as client:
        results = {r.source: r for r in client.diagnose_many(sources, batch_size=10)}
    assert results[str(paths[0])].label == "A_x" and results[str(paths[2])].label == "C_z"
    assert (results[str(paths[1])].error_status, results[str(paths[1])].error_message) == (415, "not an image")
    missing = results[str(tmp_path / "missing.jpg")]
    assert missing.error_status is None and "no such file" in missing.error_message
    assert fake.sizes() == [3]  # the unreadable one never went up


def test_photos_are_read_lazily_batch_by_batch(url):
    reads: list[int] = []

    def photo(n: int) -> Photo:
        return Photo(f"mem://{n}", f"{n}.jpg", lambda: reads.append(n) or photo_bytes("A_b", n))

    with fast_client(url) as client:
        results = client.diagnose_many((photo(n) for n in range(12)), batch_size=2, concurrency=1)
        first = next(results)
        assert first.ok and len(reads) <= 4
        assert len(list(results)) == 11
    assert sorted(reads) == list(range(12))


def test_a_request_too_large_in_total_is_split(url, fake, tmp_path):
    paths = write_photos(tmp_path, ["A_a", "B_b", "C_c", "D_d"])
    fake.script(PREDICTIONS, (413, {}, {"message": "too large in total"}))
    with fast_client(url) as client:
        results = list(client.diagnose_many(paths, batch_size=4, ordered=True))
    assert [r.label for r in results] == ["A_a", "B_b", "C_c", "D_d"]
    assert fake.sizes() == [4, 2, 2]


def test_photos_larger_together_than_max_request_bytes_go_in_several_requests(url, fake, tmp_path):
    paths = write_photos(tmp_path, ["A_a", "B_b", "C_c", "D_d", "E_e"])
    with fast_client(url, max_request_bytes=600) as client:  # about 290 bytes a photo with its multipart part
        results = list(client.diagnose_many(paths, batch_size=5, ordered=True))
    assert [r.label for r in results] == ["A_a", "B_b", "C_c", "D_d", "E_e"]
    assert fake.sizes() == [2, 2, 1]


def test_a_request_level_error_fails_every_photo_of_that_request(url, fake, tmp_path):
    paths = write_photos(tmp_path, ["A_a", "B_b", "C_c"])
    fake.script(PREDICTIONS, (400, {}, {"message": "at most 2 images per request"}))
    with fast_client(url) as client:
        results = list(client.diagnose_many(paths, batch_size=3))
    assert {(r.error_status, r.error_message) for r in results} == {(400, "at most 2 images per request")}


def test_missing_or_null_keys_in_the_answer_are_tolerated(url, fake, tmp_path):
    paths = write_photos(tmp_path, ["A_a", "B_b", "C_c"])
    answer = {"results": [{"diagnosis": {"label": "A_a"}}, {"index": 1, "status": None, "message": None}]}
    fake.script(PREDICTIONS, (200, {}, answer))
    with fast_client(url) as client:
        results = list(client.diagnose_many(paths, batch_size=3, ordered=True))
    assert results[0].ok and results[0].label == "A_a" and results[0].confidence is None
    assert not results[1].ok and results[1].error_message == "the server gave no diagnosis"
    assert not results[2].ok and "no result" in results[2].error_message


def test_a_server_without_the_many_photo_endpoint_is_used_one_photo_at_a_time(tmp_path):
    fake = FakePlantNet(many=False)
    paths = write_photos(tmp_path, ["A_a", "B_b", "C_c"])
    with serving(fake) as url, fast_client(url) as client:
        results = list(client.diagnose_many(paths, batch_size=2, concurrency=1, ordered=True))
    assert [r.label for r in results] == ["A_a", "B_b", "C_c"]
    assert fake.sizes(PREDICTION) == [1, 1, 1]


# -- retries -----------------------------------------------------------------------------------------
def test_503_is_retried_honouring_retry_after(url, fake, tmp_path):
    (path,) = write_photos(tmp_path, ["A_a"])
    fake.script(PREDICTION, (503, {"Retry-After": "2"}, {"message": "overloaded"}))
    fake.script(PREDICTIONS, (503, {"Retry-After": "1"}, None), (503, {"Retry-After": "3600"}, None))
    with fast_client(url, max_retry_after=5) as client:
        slept: list[float] = []
        client._sleep = slept.append
        assert client.diagnose(path).ok
        assert slept == [2.0]
        assert [r.ok for r in client.diagnose_many([path])] == [True]
        assert slept == [2.0, 1.0, 5.0]  # a huge Retry-After is capped at max_retry_after
    assert fake.sizes(PREDICTION) == [1, 1] and fake.sizes() == [1, 1, 1]


def test_503_really_waits_for_retry_after(url, fake, tmp_path):
    (path,) = write_photos(tmp_path, ["A_a"])
    fake.script(PREDICTION, (503, {"Retry-After": "1"}, None))
    with fast_client(url) as client:
        started = time.monotonic()
        assert client.diagnose(path).ok
    assert 0.95 <= time.monotonic() - started < 5


def test_backoff_doubles_without_retry_after(url, fake, tmp_path):
    (path,) = write_photos(tmp_path, ["A_a"])
    fake.script(PREDICTION, *[(503, {}, None)] * 4)
    with fast_client(url, retries=4, backoff=1.0, max_backoff=5.0) as client:
        slept: list[float] = []
        client._sleep = slept.append
        assert client.diagnose(path).ok
    assert len(slept) == 4
    for attempt, delay in enumerate(slept):  # equal jitter: between half and all of min(5, 2**attempt)
        ceiling = min(5.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling


def test_gives_up_after_the_last_retry_with_the_last_answer(url, fake, tmp_path):
    (path,) = write_photos(tmp_path, ["A_a"])
    fake.script(PREDICTIONS, *[(503, {"Retry-After": "0"}, {"message": "overloaded"})] * 5)
    with fast_client(url, retries=2) as client:
        (result,) = client.diagnose_many([path])
    assert (result.error_status, result.error_message) == (503, "overloaded")
    assert fake.sizes() == [1, 1, 1]


def test_client_errors_are_not_retried(url, fake, tmp_path):
    (path,) = write_photos(tmp_path, ["A_a"])
    fake.script(PREDICTION, (400, {}, {"message": "bad top_k"}))
    with fast_client(url) as client:
        result = client.diagnose(path, top_k=999)
    assert (result.error_status, result.error_message) == (400, "bad top_k")
    assert fake.sizes(PREDICTION) == [1]


def test_connection_errors_are_retried_until_the_service_is_up(fake, tmp_path):
    (path,) = write_photos(tmp_path, ["A_a"])
    port = free_port()
    started = threading.Event()
    stop = threading.Event()

    def start_later():
        time.sleep(0.4)
        with serving(fake, port):
            started.set()
            stop.wait(10)

    thread = threading.Thread(target=start_later, daemon=True)
    thread.start()
    try:
        with fast_client(f"http://127.0.0.1:{port}", retries=8, backoff=0.1, max_backoff=0.3) as client:
            result = client.diagnose(path)
        assert started.is_set() and result.ok and result.label == "A_a"
    finally:
        stop.set()
        thread.join(5)


def test_an_unreachable_service_fails_each_photo_after_the_retries(tmp_path):
    paths = write_photos(tmp_path, ["A_a", "B_b"])
    with fast_client(f"http://127.0.0.1:{free_port()}", retries=1) as client:
        results = list(client.diagnose_many(paths))
    assert len(results) == 2
    assert all(not r.ok and r.error_status is None and "after 2 attempt(s)" in r.error_message for r in results)


def test_parse_retry_after():
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)  # noqa: UP017
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None
    assert parse_retry_after("-3") == 0.0


# -- sources -----------------------------------------------------------------------------------------
def test_a_folder_is_its_images_recursively_and_sorted(tmp_path):
    for name in ["b.jpg", "a.PNG", "sub/c.webp", "sub/deeper/d.tiff", "notes.txt", ".hidden.jpg", ".git/e.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "readme.txt").write_text("explicit files are taken whatever their extension")
    with Expander() as expander:
        folder = [p.source for p in expander.expand(tmp_path)]
        explicit = list(expander.expand(str(tmp_path / "readme.txt")))
    assert folder == [str(tmp_path / n) for n in ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.tiff"]]
    assert [p.name for p in explicit] == ["readme.txt"]


def test_url_sources_are_downloaded_by_the_client_with_a_size_limit(url, fake):
    fake.files["leaf.jpg"] = photo_bytes("Grape_Black rot")
    fake.files["big.jpg"] = b"x" * 5000
    sources = [f"{url}/files/leaf.jpg", f"{url}/files/big.jpg", f"{url}/files/stream-5000", f"{url}/files/gone.jpg"]
    with fast_client(url, max_download_bytes=4000) as client:
        results = {r.source: r for r in client.diagnose_many(sources, ordered=True)}
    assert results[sources[0]].label == "Grape_Black rot"
    assert "5000 bytes, over the 4000-byte limit" in results[sources[1]].error_message
    assert "over the 4000-byte limit" in results[sources[2]].error_message
    assert "HTTP 404" in results[sources[3]].error_message
    assert fake.sizes() == [1]  # only the downloaded bytes went up, never a URL
    assert fake.requests[-1]["filenames"] == ["leaf.jpg"]


def test_an_unreadable_source_raises_source_error_on_read(tmp_path):
    with Expander() as expander:
        (photo,) = expander.expand(str(tmp_path / "nope"))
        with pytest.raises(SourceError, match="no such file"):
            photo.read()
        with pytest.raises(TypeError):
            list(expander.expand([3.14]))


# -- the plantnet command ------------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_jsonl_output_summary_and_exit_0(url, tmp_path, capsys):
    write_photos(tmp_path / "photos", ["Tomato_healthy", "Tomato_healthy", "Tomato_Late blight"])
    out_file = tmp_path / "out.jsonl"
    code, out, err = run_cli(capsys, "diagnose", str(tmp_path / "photos"), "--url", url, "-o", str(out_file))
    assert code == 0 and out == ""
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert sorted(r["label"] for r in records) == ["Tomato_Late blight", "Tomato_healthy", "Tomato_healthy"]
    assert set(records[0]) >= {"source", "ok", "label", "confidence", "top_k", "known", "error_message"}
    assert "3 photos: 3 diagnosed, 0 failed" in err
    assert "Tomato_healthy" in err and "2" in err


def test_cli_exit_1_when_any_photo_failed(url, tmp_path, capsys, monkeypatch):
    paths = write_photos(tmp_path, ["A_a", "B_b"])
    paths[0].write_bytes(b"junk")
    monkeypatch.setenv("PLANTNET_URL", url)
    code, out, err = run_cli(capsys, "diagnose", *map(str, paths), "--format", "jsonl", "--ordered")
    assert code == 1
    assert [json.loads(line)["ok"] for line in out.splitlines()] == [False, True]
    assert "1 failed" in err and "HTTP 415: not an image" in err


def test_cli_exit_1_when_no_photo_is_found_or_the_service_is_down(url, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_cli(capsys, "diagnose", str(tmp_path / "empty"), "--url", url)[0] == 1
    write_photos(tmp_path / "one", ["A_a"])
    down = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_cli(capsys, "diagnose", str(tmp_path / "one"), "--url", down, "--retries", "0")
    assert code == 1 and "cannot reach" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["diagnose"],
        ["diagnose", "x.jpg", "--format", "xml"],
        ["diagnose", "x.jpg", "--batch-size", "0"],
        ["diagnose", "x.jpg", "--max-request-mb", "0"],
        ["diagnose", "x.jpg", "--resume"],
        ["diagnose", "x.jpg", "--resume", "-o", "out.json", "--format", "json"],
    ],
)
def test_cli_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    capsys.readouterr()


def test_cli_csv_json_and_table_formats(url, tmp_path, capsys):
    photos = tmp_path / "photos"
    paths = write_photos(photos, ["Tomato_healthy", "Unknown"])
    csv_file, json_file = tmp_path / "out.csv", tmp_path / "out.json"
    assert run_cli(capsys, "diagnose", str(photos), "--url", url, "-o", str(csv_file), "--top-k", "2")[0] == 0
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text())))
    assert [r["source"] for r in rows] == list(map(str, paths)) and rows[0]["ok"] == "true"
    assert json.loads(rows[0]["top_k"])[1] == {"label": "Apple_scab", "confidence": 0.07}
    assert rows[1]["known"] == "false" and rows[1]["species"] == ""

    code, _, err = run_cli(capsys, "diagnose", str(photos), "--url", url, "-o", str(json_file), "--ordered")
    assert code == 0 and [r["label"] for r in json.loads(json_file.read_text())] == ["Tomato_healthy", "Unknown"]
    assert "1 not a known leaf" in err

    code, out, _ = run_cli(capsys, "diagnose", str(photos), "--url", url, "--ordered")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["CONFIDENCE", "LABEL", "SOURCE"]
    assert lines[1].split() == ["90.0%", "Tomato_healthy", str(paths[0])]
    assert "Unknown (not a known leaf)" in lines[2]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_cli_resume_skips_photos_already_diagnosed_and_retries_failed_ones(url, fake, tmp_path, capsys, fmt):
    photos = tmp_path / "photos"
    paths = write_photos(photos, [f"Plant_{n}" for n in range(6)])
    paths[5].write_bytes(b"junk")
    output = tmp_path / f"out.{fmt}"
    argv = ["diagnose", str(photos), "--url", url, "-o", str(output), "--format", fmt, "--batch-size", "2"]
    assert run_cli(capsys, *argv)[0] == 1
    assert sum(fake.sizes()) == 6

    paths[5].write_bytes(photo_bytes("Plant_5"))  # fixed since
    with output.open("a") as stream:  # and the first run died half-way through a line
        stream.write('{"source": "half a li')
    fake.requests.clear()
    code, _, err = run_cli(capsys, *argv, "--resume")
    assert code == 0 and sum(fake.sizes()) == 1 and "5 skipped" in err
    assert already_done(output, fmt) == set(map(str, paths))
    if fmt == "csv":
        assert output.read_text().count("source,ok,label") == 1


def test_cli_health(url, capsys):
    assert run_cli(capsys, "health", "--url", url)[0] == 0
    assert run_cli(capsys, "health", "--url", f"http://127.0.0.1:{free_port()}")[0] == 1


# -- packaging -----------------------------------------------------------------------------------------
def test_importing_the_client_loads_no_server_or_ml_framework():
    code = (
        "import sys, plantnet_client, plantnet_client.cli, plantnet_client.sources\n"
        "heavy = [m for m in ('tensorflow', 'openvino', 'flask', 'keras', 'util', 'application') if m in sys.modules]\n"
        "print(heavy)"
    )
    env = {**os.environ, "PYTHONPATH": str(CLIENT_DIR)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_command_runs_as_a_module_and_exits_2_on_usage_errors():
    env = {**os.environ, "PYTHONPATH": str(CLIENT_DIR)}
    done = subprocess.run(
        [sys.executable, "-m", "plantnet_client", "diagnose", "--format", "xml", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr


# -- crop hints, one plant, the model (issue 23) -------------------------------------------------
def test_a_crop_hint_is_sent_with_one_photo_and_with_many(url, fake, tmp_path):
    paths = write_photos(tmp_path, ["Tomato_Late blight", "Tomato_healthy"])
    with fast_client(url) as client:
        client.diagnose(paths[0], crop="Tomato")
        list(client.diagnose_many(paths, crop="Tomato", top_k=2))
        client.diagnose(paths[0])
    assert [(r["path"], r.get("crop"), r["top_k"]) for r in fake.requests] == [
        (PREDICTION, "Tomato", None),
        (PREDICTIONS, "Tomato", "2"),
        (PREDICTION, None, None),  # no hint: no field at all, the server's default
    ]


def test_a_crop_the_server_does_not_know_is_a_failed_result_with_its_message(url, fake, tmp_path):
    (path,) = write_photos(tmp_path, ["Tomato_Late blight"])
    fake.script(PREDICTION, (400, {}, {"message": "This model does not know the crop 'Banana'. Send one of: Apple"}))
    with fast_client(url) as client:
        result = client.diagnose(path, crop="Banana")
    assert not result.ok and result.error_status == 400 and "'Banana'" in result.error_message


def test_diagnose_plant_gives_one_diagnosis_and_each_photos_result(url, fake, tmp_path):
    paths = write_photos(tmp_path, ["Tomato_Late blight", "Unknown", "Tomato_Late blight"])
    paths[2].write_bytes(b"junk")
    with fast_client(url) as client:
        plant = client.diagnose_plant(paths, crop="Tomato", strict=True)
    assert plant.ok and plant.diagnosis.label == "Tomato_Late blight" and plant.diagnosis.crop == "Tomato"
    assert plant.combined_from == 1
    assert [photo.source for photo in plant.photos] == [str(p) for p in paths]
    assert [photo.ok for photo in plant.photos] == [True, True, False]
    assert plant.photos[1].known is False and plant.photos[2].error_status == 415
    assert str(paths[0]) in plant.diagnosis.source
    (sent,) = fake.requests
    assert sent["path"] == PLANT and sent["filenames"] == [p.name for p in paths]
    assert (sent["crop"], sent["strict"]) == ("Tomato", "true")


def test_diagnose_plant_refused_is_a_failed_diagnosis_with_the_servers_words(url, tmp_path):
    paths = write_photos(tmp_path, ["Tomato_healthy"] * 6)
    with fast_client(url) as client:
        plant = client.diagnose_plant(paths)
    assert not plant.ok and plant.diagnosis.error_status == 400 and "1 to 5" in plant.diagnosis.error_message
    assert plant.photos == () and plant.combined_from is None


def test_model_info_is_the_servers_description(url):
    with fast_client(url) as client:
        info = client.model_info()
    assert info["name"] == "fake" and info["crops"][1] == {"crop": "Tomato", "labels": ["Tomato_Late blight"]}


def test_model_info_of_a_server_without_it_raises_with_the_status(url, fake):
    from plantnet_client import RequestRejected

    fake.script(MODEL, (404, {}, {"message": "not found"}))
    with fast_client(url) as client, pytest.raises(RequestRejected) as raised:
        client.model_info()
    assert raised.value.status == 404


def test_cli_diagnose_sends_the_crop(url, fake, tmp_path, capsys):
    write_photos(tmp_path / "photos", ["Tomato_healthy"])
    code, _, _ = run_cli(capsys, "diagnose", str(tmp_path / "photos"), "--url", url, "--crop", "Tomato", "-q")
    assert code == 0 and fake.requests[0].get("crop") == "Tomato"


def test_cli_plant_prints_one_diagnosis_and_each_photo(url, tmp_path, capsys):
    paths = write_photos(tmp_path, ["Tomato_Late blight", "Unknown"])
    code, out, _ = run_cli(capsys, "plant", *map(str, paths), "--url", url, "--crop", "Tomato")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "this plant: Tomato_Late blight, 90.0% sure, from 1 of 2 photos (crop hint: Tomato)"
    assert lines[1].endswith("used: on its own Tomato_Late blight, 90.0%")
    assert lines[2].endswith("left out: not a leaf the model knows")


def test_cli_plant_json_and_exit_1_when_refused(url, tmp_path, capsys):
    paths = write_photos(tmp_path, ["Tomato_Late blight"])
    code, out, _ = run_cli(capsys, "plant", str(paths[0]), "--url", url, "--format", "json")
    record = json.loads(out)
    assert code == 0 and record["label"] == "Tomato_Late blight" and record["combined_from"] == 1
    assert [photo["source"] for photo in record["photos"]] == [str(paths[0])]
    code, out, _ = run_cli(capsys, "plant", str(paths[0]), "--url", url, "--crop", "Banana")
    assert code == 1 and out.startswith("no diagnosis: HTTP 400:")


def test_cli_model_prints_labels_by_crop(url, capsys):
    code, out, _ = run_cli(capsys, "model", "--url", url)
    assert code == 0
    assert out.splitlines()[0] == "fake 0: fake/f32, 160 px, 2 labels"
    assert "  Tomato: Late blight" in out and "measured: top-1 90.00% on 10 validation photos" in out
    code, out, _ = run_cli(capsys, "model", "--url", url, "--format", "json")
    assert code == 0 and json.loads(out)["name"] == "fake"
