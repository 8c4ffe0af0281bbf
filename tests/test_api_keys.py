"""Optional API keys and the page switch (issue 27, item 5): off by default, 401 JSON when on."""

from __future__ import annotations

import io

import pytest

from application import create_app
from tests.support import PREDICT, sample_bytes, serving
from util.api import security

PLAIN_KEY = "k3y-for-the-field-app"
HASHED_KEY = "another key, stored hashed"


@pytest.fixture(scope="module")
def keyed_app(tiny_model_dir, openvino_cache, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    keys.write_text(f"# one key a line\n{PLAIN_KEY}\n\n{security.HASH_PREFIX}{security.digest_of(HASHED_KEY).hex()}\n")
    with serving(tiny_model_dir, openvino_cache, api_keys_file=str(keys), page=False) as app:
        yield app


def post_photo(client, headers: dict | None = None):
    photo = (io.BytesIO(sample_bytes("tomato_healthy.jpg")), "leaf.jpg")
    return client.post(PREDICT, data={"image": photo}, headers=headers or {})


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": PLAIN_KEY + "x"}, 401),
        ({"Authorization": "Basic " + PLAIN_KEY}, 401),
        ({"Authorization": f"Bearer {PLAIN_KEY}"}, 200),
        ({"X-API-Key": PLAIN_KEY}, 200),
        ({"Authorization": f"bearer {HASHED_KEY}"}, 200),
        ({"X-API-Key": HASHED_KEY}, 200),
    ],
)
def test_the_json_api_needs_a_key_when_keys_are_set(keyed_app, headers, status):
    r = post_photo(keyed_app.test_client(), headers)
    assert r.status_code == status, r.get_data(as_text=True)
    if status == 401:
        assert r.is_json and "API key" in r.get_json()["message"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert "label" not in r.get_json()


def test_every_api_route_is_keyed_but_probes_metrics_and_docs_are_open(keyed_app):
    client = keyed_app.test_client()
    assert client.get("/Conditions/").status_code == 401
    assert client.get("/Conditions/", headers={"X-API-Key": PLAIN_KEY}).status_code == 200
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/", "/swagger.json"):
        assert client.get(path).status_code == 200, path


def test_the_page_can_be_turned_off(keyed_app, client):
    off = keyed_app.test_client().get("/diagnose")
    assert off.status_code == 404 and off.is_json and "turned off" in off.get_json()["message"]
    assert client.get("/diagnose").status_code == 200  # the default app: page on


def test_keys_are_off_by_default(client):
    assert post_photo(client).status_code == 200


@pytest.mark.parametrize(
    ("content", "problem"),
    [("", "holds no key"), ("# only a comment\n", "holds no key"), ("sha256:abcd\n", "line 1"), (None, "cannot read")],
)
def test_a_keys_file_without_usable_keys_stops_start_up(tiny_model_dir, openvino_cache, tmp_path, content, problem):
    keys = tmp_path / "keys.txt"
    if content is not None:
        keys.write_text(content)
    settings = {"model_dir": tiny_model_dir, "cache_dir": openvino_cache, "api_keys_file": str(keys)}
    with pytest.raises(ValueError, match=problem):
        create_app({"SETTINGS": settings})


def test_hash_command_prints_the_line_for_the_keys_file(capsys):
    assert security.main(["hash", "s3cret"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("sha256:") and security.KeyRing.from_lines([line]).accepts("s3cret")
    assert not security.KeyRing.from_lines([line]).accepts("s3cret ")
