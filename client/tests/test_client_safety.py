"""The client against hostile sources and outputs (issue 27, item 6): redirects, sizes, CSV cells, --resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plantnet_client import Expander, SourceError
from plantnet_client.cli import main
from plantnet_client.sources import check_redirect
from werkzeug.wrappers import Request, Response

from tests.fake_plantnet import FakePlantNet, photo_bytes, serving
from tests.support import ROOT

# --- redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "target", "refused"),
    [
        ("https://photos.example/a.jpg", "http://photos.example/a.jpg", "HTTPS to HTTP"),
        ("http://photos.example/a.jpg", "http://127.0.0.1:8080/a.jpg", "loopback"),
        ("http://photos.example/a.jpg", "http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://photos.example/a.jpg", "http://10.0.0.7/a.jpg", "private"),
        ("http://photos.example/a.jpg", "http://[::1]/a.jpg", "loopback"),
        ("http://photos.example/a.jpg", "file:///etc/passwd", "redirects to a file URL"),
    ],
)
def test_unsafe_redirects_are_refused(origin, target, refused):
    with pytest.raises(SourceError, match="refused") as caught:
        check_redirect(origin, target)
    assert refused.split()[0] in str(caught.value) or refused in str(caught.value)


def test_a_redirect_to_a_public_address_over_https_is_followed():
    check_redirect("http://photos.example/a.jpg", "https://93.184.215.14/a.jpg")  # no exception


class Redirecting:
    """Serves /go as a redirect to ``target`` and /leaf.jpg as a photo."""

    def __init__(self) -> None:
        self.target = ""

    @Request.application
    def __call__(self, request: Request) -> Response:
        if request.path == "/go":
            return Response("", 302, {"Location": self.target})
        return Response(photo_bytes("Tomato_healthy"), mimetype="image/jpeg")


def test_a_download_redirected_to_this_machine_is_refused_unless_allowed():
    app = Redirecting()
    with serving(app) as url:
        app.target = f"{url}/leaf.jpg"  # 127.0.0.1: the network the command runs in
        with Expander() as expander:
            with pytest.raises(SourceError, match="loopback"):
                expander.download(f"{url}/go")
            assert expander.download(f"{url}/leaf.jpg") == photo_bytes("Tomato_healthy")  # named by the user: fine
        with Expander(allow_unsafe_redirects=True) as trusting:
            assert trusting.download(f"{url}/go") == photo_bytes("Tomato_healthy")


# --- size caps ------------------------------------------------------------------------------------


def test_a_local_file_over_the_limit_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\0" * 5000)
    with Expander(max_download_bytes=4096) as expander:
        (photo,) = expander.expand(str(big))
        with pytest.raises(SourceError, match="over the 4,096-byte limit"):
            photo.read()
        (small,) = Expander(max_download_bytes=5000).expand(str(big))
        assert len(small.read()) == 5000


@pytest.mark.slow  # moto's S3 server
def test_an_s3_object_over_the_limit_is_refused(tmp_path, monkeypatch):
    from tests.support import moto_s3, use_fake_aws

    with moto_s3({"safety-leaves": {"big.jpg": b"\0" * 5000, "small.jpg": b"\1" * 100}}) as endpoint:
        use_fake_aws(monkeypatch, tmp_path, endpoint)
        with Expander(max_download_bytes=4096) as expander:
            photos = {p.name: p for p in expander.expand("s3://safety-leaves/")}
            with pytest.raises(SourceError, match="over the 4,096-byte limit"):
                photos["big.jpg"].read()
            assert photos["small.jpg"].read() == b"\1" * 100


# --- what the command writes ----------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(url, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    names = ['=HYPERLINK("evil.example","x").jpg', "+1.jpg", "@SUM(A1).jpg", "-2.jpg", "plain.jpg"]
    for name in names:
        (photos / name).write_bytes(photo_bytes("=2+5"))  # the server's label starts a formula too
    monkeypatch.chdir(photos)  # sources as the user typed them: the cell starts with the name
    output = tmp_path / "out.csv"
    assert run_cli(capsys, "diagnose", "--url", url, "-o", str(output), "--", *names)[0] == 0
    with output.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == len(names)
    assert not [cell for row in rows for cell in row.values() if cell[:1] in ("=", "+", "-", "@")]
    assert [row["source"] for row in rows] == [("'" + n if n[0] in "=+-@" else n) for n in names]
    assert {row["label"] for row in rows} == {"'=2+5"}


def test_csv_quotes_a_cell_that_starts_a_formula_and_resume_reads_it_back(tmp_path):
    from plantnet_client.cli import _csv_text, _csv_value

    for text in ("=1+1", "+cmd", "-x", "@x", "'quoted", "plain", "\tstart"):
        cell = _csv_value(text)
        assert cell[:1] not in ("=", "+", "-", "@", "\t")
        assert _csv_text(cell) == text.replace("\t", " ")


def test_control_characters_never_reach_the_terminal(url, tmp_path, capsys):
    photo = tmp_path / "leaf\x1b[2J\x07.jpg"
    photo.write_bytes(photo_bytes("Tomato_\x1b]0;pwned\x07healthy"))
    code, out, err = run_cli(capsys, "diagnose", str(photo), "--url", url)
    assert code == 0
    assert not any(ch in out + err for ch in ("\x1b", "\x07"))
    assert "leaf?[2J?.jpg" in out


def test_a_non_empty_output_needs_resume_or_force(url, tmp_path, capsys):
    photo = tmp_path / "leaf.jpg"
    photo.write_bytes(photo_bytes("Tomato_healthy"))
    output = tmp_path / "out.jsonl"
    output.write_text('{"source": "earlier work", "ok": true}\n')
    with pytest.raises(SystemExit) as refused:  # a usage error, as argparse reports them
        main(["diagnose", str(photo), "--url", url, "-o", str(output)])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--resume" in err and "--force" in err
    assert output.read_text() == '{"source": "earlier work", "ok": true}\n'
    assert run_cli(capsys, "diagnose", str(photo), "--url", url, "-o", str(output), "--force")[0] == 0
    assert "earlier work" not in output.read_text()


# --- --resume after SIGKILL -------------------------------------------------------------------------


class Slow:
    """The fake service, answering each request after ``delay`` seconds: time to kill the command mid-run."""

    def __init__(self, app: FakePlantNet, delay: float) -> None:
        self.app, self.delay = app, delay

    def __call__(self, environ, start_response):
        time.sleep(self.delay)
        return self.app(environ, start_response)


def records(path: Path, fmt: str) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(text.splitlines()))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_after_sigkill_gives_exactly_one_record_per_source(tmp_path, fmt):
    photos = tmp_path / "photos"
    photos.mkdir()
    sources = []
    for n in range(12):
        path = photos / f"leaf{n:02d}.jpg"
        path.write_bytes(photo_bytes("Tomato_healthy", n) if n != 3 else b"not a photo yet")
        sources.append(str(path))
    output = tmp_path / f"out.{fmt}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "client"), str(ROOT)])}
    with serving(Slow(FakePlantNet(), 0.25)) as url:
        argv = [sys.executable, "-m", "plantnet_client", "diagnose", str(photos), "--url", url, "-o", str(output)]
        argv += ["--format", fmt, "--batch-size", "1", "--concurrency", "1", "--ordered", "--no-progress"]
        first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not output.exists() or output.read_bytes().count(b"\n") < 6):
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert len(records(output, fmt)) < 12, "the first run was killed before it finished"
        with output.open("a", encoding="utf-8") as stream:  # as if the kill came in the middle of a write
            stream.write('{"source": "' + sources[-1] + '", "ok": tr' if fmt == "jsonl" else sources[-1] + ",tr")
        (photos / "leaf03.jpg").write_bytes(photo_bytes("Tomato_healthy", 3))  # the failed photo is fixed
        second = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    found = records(output, fmt)
    assert sorted(record["source"] for record in found) == sorted(sources)  # each source exactly once
    assert all(str(record["ok"]).lower() == "true" for record in found)
    if fmt == "csv":
        assert output.read_text().count("source,ok,label") == 1
