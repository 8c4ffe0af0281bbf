"""The ``plantnet`` command: ``plantnet diagnose SOURCE...`` (files, folders, http(s) URLs, s3://);
``plantnet feedback ID --right`` / ``--wrong [--label LABEL]`` on a diagnosis the service keeps;
``plantnet plant a.jpg b.jpg [--crop Tomato]``: one diagnosis of one plant from several photos of it;
``plantnet model``: what the service's model is (labels by crop, verdict, measured numbers, limits).

Exit status: 0 when every photo was diagnosed, 1 when any photo failed (or none was found),
2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from . import __version__
from .client import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_URL,
    OTHER_LABEL,
    Client,
    PlantNetError,
    PlantResult,
    Result,
)
from .sources import DEFAULT_MAX_DOWNLOAD_BYTES

FORMATS = ("table", "json", "jsonl", "csv")
RESUMABLE = ("jsonl", "csv")
CSV_FIELDS = (
    "source",
    "ok",
    "label",
    "confidence",
    "species",
    "condition",
    "healthy",
    "known",
    "in_domain_score",
    "top_k",
    "error_status",
    "error_message",
    "id",
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) in a file name);
# such a cell gets a leading apostrophe, which spreadsheets show as text (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
# Control characters (C0, DEL, C1) in names and server messages would drive the terminal (escape sequences).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plantnet", description="Command line for the PlantNet diagnosis API.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    diagnose = commands.add_parser(
        "diagnose",
        help="diagnose photos from files, folders, http(s) URLs and s3:// prefixes",
        description="Diagnose photos. SOURCE is a file, a folder (recursive), an http(s) URL (downloaded by "
        "this command) or s3://bucket/prefix (boto3 credentials; pip install 'plantnet-client[s3]').",
    )
    diagnose.add_argument("sources", nargs="+", metavar="SOURCE")
    _add_url(diagnose)
    diagnose.add_argument("--top-k", type=_positive, metavar="N", help="how many ranked labels to ask for")
    _add_crop(diagnose)
    diagnose.add_argument("--format", choices=FORMATS, default=None, help="output format (default: table)")
    diagnose.add_argument("-o", "--output", metavar="FILE", help="write results to FILE instead of stdout")
    diagnose.add_argument(
        "--resume",
        action="store_true",
        help="skip photos already diagnosed in --output (jsonl or csv) and append the rest; failed ones are retried",
    )
    diagnose.add_argument("--force", action="store_true", help="overwrite a non-empty --output")
    diagnose.add_argument(
        "--allow-unsafe-redirects",
        action="store_true",
        help="let URL downloads follow redirects from HTTPS to HTTP and to private or loopback addresses",
    )
    diagnose.add_argument(
        "--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE, help="photos per request (default: %(default)s)"
    )
    diagnose.add_argument(
        "--concurrency",
        type=_positive,
        default=DEFAULT_CONCURRENCY,
        help="requests in flight at once (default: %(default)s; the server queues 64 photos by default)",
    )
    diagnose.add_argument("--ordered", action="store_true", help="write results in the order of the sources")
    diagnose.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="S3 endpoint for s3:// sources (MinIO and other S3-compatible stores; default: $AWS_ENDPOINT_URL)",
    )
    diagnose.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    diagnose.add_argument(
        "--retries", type=int, default=3, help="retries on connection errors and 503 (default: %(default)s)"
    )
    diagnose.add_argument(
        "--max-download-mb",
        type=float,
        default=DEFAULT_MAX_DOWNLOAD_BYTES / 2**20,
        help="largest photo downloaded from a URL, in MiB (default: %(default)s)",
    )
    diagnose.add_argument(
        "--max-request-mb",
        type=float,
        default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
        help="most bytes of photos in one request, as the server allows, in MiB (default: %(default)s)",
    )
    diagnose.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    diagnose.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")

    health = commands.add_parser("health", help="exit 0 when the service answers its health check")
    _add_url(health)

    feedback = commands.add_parser(
        "feedback",
        help="say whether a diagnosis was right (the service must keep diagnoses: PLANTNET_FEEDBACK=on)",
        description="Tell the service whether the diagnosis with this id (the 'id' of its answer) was right.",
    )
    feedback.add_argument("id", metavar="ID", help="the diagnosis' id")
    verdict = feedback.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--right", dest="correct", action="store_true", help="the diagnosis was right")
    verdict.add_argument("--wrong", dest="correct", action="store_false", help="the diagnosis was wrong")
    feedback.add_argument(
        "--label", help=f"with --wrong: the right label (one of the model's labels), or '{OTHER_LABEL}'"
    )
    feedback.add_argument("--note", help="a short note (at most 500 characters)")
    _add_url(feedback)

    plant = commands.add_parser(
        "plant",
        help="one diagnosis of one plant from several photos of it (a close-up, the whole leaf, the underside)",
        description="Send 1 to 5 photos of ONE plant (the server's PLANTNET_MAX_PHOTOS_PER_PLANT) and get one "
        "diagnosis combined from the photos the server accepts, and each photo's own result.",
    )
    plant.add_argument("sources", nargs="+", metavar="PHOTO", help="a photo file, URL or s3:// key")
    _add_crop(plant)
    plant.add_argument("--top-k", type=_positive, metavar="N", help="how many ranked labels to ask for")
    plant.add_argument("--strict", action="store_true", help="fail (HTTP 422) when no photo is a leaf it knows")
    plant.add_argument("--format", choices=("table", "json"), default="table", help="output (default: table)")
    plant.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    _add_url(plant)

    model = commands.add_parser("model", help="what the service's model is: labels by crop, verdict, limits")
    model.add_argument("--format", choices=("table", "json"), default="table", help="output (default: table)")
    _add_url(model)
    return parser


def _add_crop(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--crop",
        metavar="CROP",
        help="the crop the photos show ('Tomato', 'Bell pepper'): diagnose among its labels only "
        "(plantnet model lists the crops)",
    )


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("PLANTNET_URL") or DEFAULT_URL,
        help=f"the service's base URL (default: $PLANTNET_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("PLANTNET_API_KEY") or None,
        help="the key for a service that requires one (default: $PLANTNET_API_KEY)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(parser, args)
    except BrokenPipeError:  # `plantnet diagnose ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "health":
        with Client(args.url, retries=0, api_key=args.api_key) as client:
            healthy = client.health()
        print(f"{args.url}: {'ready' if healthy else 'not ready'}")
        return EXIT_OK if healthy else EXIT_FAILED
    if args.command == "feedback":
        return send_feedback(parser, args)
    if args.command == "plant":
        return diagnose_plant(args)
    if args.command == "model":
        return describe_model(args)
    return diagnose(parser, args)


# -- plant and model --------------------------------------------------------------------------
def diagnose_plant(args: argparse.Namespace) -> int:
    try:
        with Client(args.url, timeout=args.timeout, api_key=args.api_key) as client:
            plant = client.diagnose_plant(args.sources, top_k=args.top_k, crop=args.crop, strict=args.strict)
    except ValueError as error:  # a photo this command cannot read
        print(f"plantnet: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.format == "json":
        print(json.dumps(plant_record(plant), ensure_ascii=False, indent=1))
    else:
        print_plant(plant, sys.stdout)
    return EXIT_OK if plant.ok else EXIT_FAILED


def plant_record(plant: PlantResult) -> dict[str, Any]:
    return {
        **plant.diagnosis.to_record(),
        "combined_from": plant.combined_from,
        "photos": [photo.to_record() for photo in plant.photos],
    }


def print_plant(plant: PlantResult, stream: IO[str]) -> None:
    result = plant.diagnosis
    if not result.ok:
        status = f"HTTP {result.error_status}: " if result.error_status is not None else ""
        print(f"no diagnosis: {status}{printable(result.error_message)}", file=stream)
        return
    hint = f" (crop hint: {result.crop})" if result.crop else ""
    if result.known is False:
        message = printable(result.raw.get("message") if result.raw else "")
        print(f"this plant: no diagnosis{hint}: {message}", file=stream)
    else:
        used = f"from {plant.combined_from} of {len(plant.photos)} photos"
        print(f"this plant: {result.label}, {result.confidence:.1%} sure, {used}{hint}", file=stream)
    for number, photo in enumerate(plant.photos, 1):
        if not photo.ok:
            words = f"HTTP {photo.error_status}: {photo.error_message}"
        elif photo.known is False:
            words = "left out: not a leaf the model knows"
        else:
            words = f"used: on its own {photo.label}, {photo.confidence:.1%}"
        print(f"  photo {number}: {printable(photo.source)}: {printable(words)}", file=stream)


def describe_model(args: argparse.Namespace) -> int:
    try:
        with Client(args.url, api_key=args.api_key) as client:
            info = client.model_info()
    except PlantNetError as error:
        print(f"plantnet: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.format == "json":
        print(json.dumps(info, ensure_ascii=False, indent=1))
        return EXIT_OK
    out = sys.stdout
    print(
        f"{info.get('name')} {info.get('version')}: {info.get('engine')}/{info.get('precision')}, "
        f"{info.get('input_size')} px, {info.get('labels')} labels",
        file=out,
    )
    for group in info.get("crops") or []:
        conditions = ", ".join(label.split("_", 1)[-1] for label in group.get("labels", []))
        print(f"  {group.get('crop')}: {conditions}", file=out)
    verdict = info.get("in_domain") or {}
    if verdict.get("available"):
        print(f"in-domain verdict: {verdict.get('method')}, threshold {verdict.get('threshold'):.4f}", file=out)
    measured = info.get("measured") or {}
    if measured.get("top1") is not None:
        print(
            f"measured: top-1 {measured['top1']:.2%} on {measured.get('images')} {measured.get('split')} photos",
            file=out,
        )
    limits = info.get("limits") or {}
    print("limits: " + ", ".join(f"{name} {value}" for name, value in limits.items()), file=out)
    return EXIT_OK


def send_feedback(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.correct and args.label is not None:
        parser.error("--label is for a wrong diagnosis: use it with --wrong")
    try:
        with Client(args.url, api_key=args.api_key) as client:
            saved = client.feedback(args.id, args.correct, label=args.label, note=args.note)
    except PlantNetError as error:
        print(f"plantnet: {error}", file=sys.stderr)
        return EXIT_FAILED
    given = saved.get("feedback", {})
    verdict = "right" if given.get("correct") else "wrong" + (f", it is {given['label']}" if given.get("label") else "")
    print(f"{args.id}: saved ({verdict})")
    return EXIT_OK


# -- diagnose ---------------------------------------------------------------------------------
def diagnose(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    to_stdout = args.output in (None, "-")
    fmt = args.format or ("table" if to_stdout else _format_from_suffix(args.output))
    if args.resume and to_stdout:
        parser.error("--resume needs --output FILE")
    if args.resume and fmt not in RESUMABLE:
        parser.error(f"--resume needs --format {' or '.join(RESUMABLE)}, not {fmt}")
    if args.retries < 0 or min(args.timeout, args.max_download_mb, args.max_request_mb) <= 0:
        parser.error("--retries must be >= 0; --timeout, --max-download-mb and --max-request-mb > 0")
    if not to_stdout and not (args.resume or args.force) and _non_empty(Path(args.output)):
        parser.error(f"{args.output} already holds results: add --resume to continue it or --force to overwrite it")

    err = sys.stderr
    client = Client(
        args.url,
        timeout=args.timeout,
        retries=args.retries,
        endpoint_url=args.endpoint_url,
        max_download_bytes=int(args.max_download_mb * 2**20),
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_connections=max(args.concurrency, 4),
        api_key=args.api_key,
        allow_unsafe_redirects=args.allow_unsafe_redirects,
    )
    with client:
        photos = list(client.photos(args.sources))  # listing only: every photo is read when it is sent
        if not photos:
            if not args.quiet:
                print("plantnet: no photo found in the sources given", file=err)
            return EXIT_FAILED
        skipped = 0
        if args.resume and Path(args.output).exists():
            done = keep_done(Path(args.output), fmt)
            before = len(photos)
            photos = [photo for photo in photos if photo.source not in done]
            skipped = before - len(photos)

        out, append = _open_output(args.output, args.resume)
        writer = make_writer(fmt, out, append=append)
        summary = Summary(skipped=skipped)
        # The bar goes to stderr, and only when it cannot tangle with results printed to the same terminal.
        show = err.isatty() and not (to_stdout and sys.stdout.isatty())
        progress = _progress() if show and not (args.quiet or args.no_progress) and len(photos) > 1 else None
        interrupted = False
        try:
            task = progress.add_task("diagnosing", total=len(photos)) if progress else None
            if progress:
                progress.start()
            results = client.diagnose_many(
                photos,
                top_k=args.top_k,
                crop=args.crop,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                ordered=args.ordered,
            )
            for result in results:
                writer.write(result)
                summary.add(result)
                if progress:
                    progress.advance(task)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if progress:
                progress.stop()
            writer.close()
            if out is not sys.stdout:
                out.close()
    if not args.quiet:
        summary.print(err, output=None if to_stdout else args.output)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.failed else EXIT_OK


def _format_from_suffix(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"jsonl": "jsonl", "ndjson": "jsonl", "json": "json", "csv": "csv"}.get(suffix, "table")


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )


def _non_empty(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _open_output(output: str | None, resume: bool) -> tuple[IO[str], bool]:
    """The stream to write, and whether it already holds earlier results to append to."""
    if output in (None, "-"):
        return sys.stdout, False
    path = Path(output)
    if resume and _non_empty(path):  # keep_done left only complete lines
        return path.open("a", encoding="utf-8", newline=""), True
    return path.open("w", encoding="utf-8", newline=""), False


def keep_done(path: Path, fmt: str) -> set[str]:
    """Rewrite an earlier run's ``path`` to its successful records, one per source; return those sources.

    What a killed run left half-written (the last line), failed records (tried again now) and
    repeats are dropped, so after ``--resume`` the file holds exactly one record per source. The
    file is replaced atomically: a second kill leaves the old file or the new one, never half of it.
    """
    done, body = _successful_records(path, fmt)
    _replace(path, body)
    return done


def already_done(path: Path, fmt: str) -> set[str]:
    """The sources an earlier run wrote successfully to ``path`` (failed ones are tried again)."""
    return _successful_records(path, fmt)[0]


def _successful_records(path: Path, fmt: str) -> tuple[set[str], str]:
    """The sources with a complete successful record in ``path``, and those records (the first of each) as text."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    complete = text[: text.rfind("\n") + 1]  # a line without its newline was cut off
    done: set[str] = set()
    kept: list[str] = []
    if fmt == "jsonl":
        for line in complete.splitlines(keepends=True):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            source = record.get("source") if isinstance(record, dict) else None
            if isinstance(source, str) and _truthy(record.get("ok")) and source not in done:
                done.add(source)
                kept.append(line)
        body = "".join(kept)
    else:
        rows = []
        for row in csv.DictReader(complete.splitlines(keepends=True)):
            source = _csv_text(row.get("source") or "")
            if source and _truthy(row.get("ok")) and source not in done and None not in row:
                done.add(source)
                rows.append({key: row.get(key) or "" for key in CSV_FIELDS})
        buffer = _StringSink()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        body = buffer.text
    return done, body


class _StringSink:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename it over ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


# -- writers ----------------------------------------------------------------------------------
class Writer:
    def __init__(self, stream: IO[str], append: bool = False) -> None:
        self.stream = stream
        self.append = append
        self.count = 0

    def write(self, result: Result) -> None:
        self._write(result)
        self.count += 1
        self.stream.flush()

    def _write(self, result: Result) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class JsonLinesWriter(Writer):
    def _write(self, result: Result) -> None:
        self.stream.write(json.dumps(result.to_record(), ensure_ascii=False) + "\n")


class JsonWriter(Writer):
    """One JSON array, written as results arrive (valid JSON once closed)."""

    def _write(self, result: Result) -> None:
        separator = "[\n  " if self.count == 0 else ",\n  "
        self.stream.write(separator + json.dumps(result.to_record(), ensure_ascii=False))

    def close(self) -> None:
        self.stream.write("[]\n" if self.count == 0 else "\n]\n")
        super().close()


class CsvWriter(Writer):
    def __init__(self, stream: IO[str], append: bool = False) -> None:
        super().__init__(stream, append)
        self.csv = csv.DictWriter(stream, fieldnames=CSV_FIELDS, lineterminator="\n")
        if not append:
            self.csv.writeheader()

    def _write(self, result: Result) -> None:
        record = result.to_record()
        record["top_k"] = json.dumps(record["top_k"], ensure_ascii=False) if record["top_k"] else ""
        self.csv.writerow({key: _csv_value(record[key]) for key in CSV_FIELDS})


class TableWriter(Writer):
    HEADER = f"{'CONFIDENCE':>10}  {'LABEL':<32}  SOURCE"

    def __init__(self, stream: IO[str], append: bool = False) -> None:
        super().__init__(stream, append)
        if not append:
            stream.write(self.HEADER + "\n")

    def _write(self, result: Result) -> None:
        if result.ok:
            confidence = f"{result.confidence:.1%}" if result.confidence is not None else "-"
            label = result.label or "-"
            if result.known is False:
                label += " (not a known leaf)"
        else:
            confidence = "ERROR"
            status = f"HTTP {result.error_status}: " if result.error_status is not None else ""
            label = status + (result.error_message or "")
        kept = f"  id {printable(result.id)}" if result.id else ""  # for `plantnet feedback ID`
        self.stream.write(f"{confidence:>10}  {printable(label):<32}  {printable(result.source)}{kept}\n")


def printable(text: Any) -> str:
    """``text`` without control characters, for a terminal: a file name cannot move the cursor or recolour it."""
    return CONTROL_CHARACTERS.sub("?", str(text))


def _csv_value(value: Any) -> Any:
    """A cell: "" for None, true/false, and text without control characters that no spreadsheet runs."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        value = CONTROL_CHARACTERS.sub(" ", value)
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return value


def _csv_text(cell: str) -> str:
    """The text _csv_value wrote into ``cell`` (its apostrophe removed), for --resume to match sources."""
    return cell[1:] if cell.startswith("'") and cell[1:2] and cell[1:].startswith(FORMULA_STARTS) else cell


def make_writer(fmt: str, stream: IO[str], append: bool = False) -> Writer:
    kinds = {"table": TableWriter, "json": JsonWriter, "jsonl": JsonLinesWriter, "csv": CsvWriter}
    return kinds[fmt](stream, append)


# -- summary ----------------------------------------------------------------------------------
class Summary:
    """Counts by label and the failures, printed to stderr at the end of a run."""

    SHOWN_FAILURES = 10

    def __init__(self, skipped: int = 0) -> None:
        self.skipped = skipped
        self.labels: Counter[str] = Counter()
        self.failures: list[Result] = []
        self.out_of_domain = 0

    def add(self, result: Result) -> None:
        if result.ok:
            self.labels[result.label or "-"] += 1
            self.out_of_domain += result.known is False
        else:
            self.failures.append(result)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def diagnosed(self) -> int:
        return sum(self.labels.values())

    def print(self, stream: IO[str], output: str | None = None) -> None:
        total = self.diagnosed + self.failed
        line = f"{total} photo{'s' if total != 1 else ''}: {self.diagnosed} diagnosed, {self.failed} failed"
        if self.skipped:
            line += f", {self.skipped} skipped (already in {output})"
        if self.out_of_domain:
            line += f", {self.out_of_domain} not a known leaf"
        print(line, file=stream)
        if self.labels:
            width = max(len(label) for label in self.labels)
            for label, count in self.labels.most_common():
                print(f"  {printable(label):<{width}}  {count:>6}", file=stream)
        if self.failures:
            print("failures:", file=stream)
            for result in self.failures[: self.SHOWN_FAILURES]:
                status = f"HTTP {result.error_status}: " if result.error_status is not None else ""
                print(f"  {printable(result.source)}: {status}{printable(result.error_message)}", file=stream)
            if self.failed > self.SHOWN_FAILURES:
                print(f"  ... and {self.failed - self.SHOWN_FAILURES} more", file=stream)
        if output:
            print(f"results in {output}", file=stream)


if __name__ == "__main__":
    sys.exit(main())
