"""``s3://`` sources against a real S3 HTTP endpoint: moto's server on 127.0.0.1, boto3 over HTTP, no patching.

The diagnoses come from the protocol double of ``test_client`` (no model here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

from plantnet_client import Client, Expander  # noqa: E402
from plantnet_client.cli import main  # noqa: E402

from tests.fake_plantnet import PREDICTIONS, label_of, photo_bytes  # noqa: E402
from tests.support import moto_s3, use_fake_aws  # noqa: E402

BUCKET = "leaves"
OBJECTS = {
    "photos/b.jpg": photo_bytes("Tomato_healthy", 1),
    "photos/a.PNG": photo_bytes("Tomato_Late blight", 2),
    "photos/sub/c.webp": photo_bytes("Apple_scab", 3),
    "photos/notes.txt": b"not a photo",
    "photos/empty-folder/": b"",
    "photos2/d.jpg": photo_bytes("Grape_healthy", 4),
    "other/odd.bin": photo_bytes("Corn_healthy", 5),
}
PHOTOS = ["s3://leaves/photos/a.PNG", "s3://leaves/photos/b.jpg", "s3://leaves/photos/sub/c.webp"]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3({BUCKET: OBJECTS}) as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def credentials(monkeypatch, tmp_path):
    """boto3's standard chain finds these in the environment; nothing from the machine leaks in."""
    use_fake_aws(monkeypatch, tmp_path)


def test_a_prefix_lists_its_images_like_a_folder_across_pages(s3_endpoint):
    with Expander(endpoint_url=s3_endpoint, s3_page_size=2) as expander:
        listed = [photo.source for photo in expander.expand("s3://leaves/photos")]
        with_slash = [photo.source for photo in expander.expand("s3://leaves/photos/")]
        whole = [photo.source for photo in expander.expand("s3://leaves")]
    assert listed == with_slash == PHOTOS  # not photos2/, not notes.txt, not the folder marker
    assert whole == [*PHOTOS, "s3://leaves/photos2/d.jpg"]


def test_a_key_names_one_object_whatever_its_extension(s3_endpoint):
    with Expander(endpoint_url=s3_endpoint) as expander:
        (photo,) = expander.expand("s3://leaves/other/odd.bin")
        assert (photo.name, photo.read()) == ("odd.bin", OBJECTS["other/odd.bin"])


def test_the_client_diagnoses_a_bucket_prefix_with_aws_endpoint_url(s3_endpoint, url, fake, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    with Client(url, retries=1, backoff=0.01) as client:
        results = list(client.diagnose_many(["s3://leaves/photos"], batch_size=2, ordered=True))
        single = client.diagnose("s3://leaves/photos2/d.jpg")
    assert [r.source for r in results] == PHOTOS
    assert [r.label for r in results] == [label_of(OBJECTS[s.removeprefix("s3://leaves/")]) for s in PHOTOS]
    assert single.ok and single.label == "Grape_healthy"
    assert sorted(fake.sizes()) == [1, 2]


def test_a_missing_bucket_or_key_is_a_failed_photo(s3_endpoint, url):
    with Client(url, retries=0, endpoint_url=s3_endpoint) as client:
        results = {r.source: r for r in client.diagnose_many(["s3://no-such-bucket/x", "s3://leaves/photos/b.jpg"])}
        gone = client.diagnose(client.expander.s3_photo(BUCKET, "photos/deleted.jpg"))
    assert not results["s3://no-such-bucket/x"].ok and "NoSuchBucket" in results["s3://no-such-bucket/x"].error_message
    assert results["s3://leaves/photos/b.jpg"].label == "Tomato_healthy"
    assert not gone.ok and "cannot read s3://leaves/photos/deleted.jpg" in gone.error_message


def test_the_command_reads_s3_with_endpoint_url(s3_endpoint, url, fake, tmp_path, capsys):
    output = tmp_path / "out.jsonl"
    argv = ["diagnose", "s3://leaves/photos/", "--endpoint-url", s3_endpoint, "--url", url, "-o", str(output)]
    assert main(argv) == 0
    assert sorted(json.loads(line)["source"] for line in output.read_text().splitlines()) == PHOTOS
    fake.requests.clear()
    assert main([*argv, "--resume"]) == 0
    assert fake.sizes(PREDICTIONS) == []
    assert "3 skipped" in capsys.readouterr().err
