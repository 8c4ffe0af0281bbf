"""The ``plantnet`` command: ``plantnet diagnose SOURCE...`` (files, folders, http(s) URLs, s3://).

Exit status: 0 when every photo was diagnosed, 1 when any photo failed (or none was found),
2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from . import __version__
from .client import DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_URL, Client, Result
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
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
    diagnose.add_argument("--format", choices=FORMATS, default=None, help="output format (default: table)")
    diagnose.add_argument("-o", "--output", metavar="FILE", help="write results to FILE instead of stdout")
    diagnose.add_argument(
        "--resume",
        action="store_true",
        help="skip photos already diagnosed in --output (jsonl or csv) and append the rest; failed ones are retried",
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
    return parser


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("PLANTNET_URL") or DEFAULT_URL,
        help=f"the service's base URL (default: $PLANTNET_URL or {DEFAULT_URL})",
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
        with Client(args.url, retries=0) as client:
            healthy = client.health()
        print(f"{args.url}: {'ready' if healthy else 'not ready'}")
        return EXIT_OK if healthy else EXIT_FAILED
    return diagnose(parser, args)


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

    err = sys.stderr
    client = Client(
        args.url,
        timeout=args.timeout,
        retries=args.retries,
        endpoint_url=args.endpoint_url,
        max_download_bytes=int(args.max_download_mb * 2**20),
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_connections=max(args.concurrency, 4),
    )
    with client:
        photos = list(client.photos(args.sources))  # listing only: every photo is read when it is sent
        if not photos:
            if not args.quiet:
                print("plantnet: no photo found in the sources given", file=err)
            return EXIT_FAILED
        skipped = 0
        if args.resume and Path(args.output).exists():
            done = already_done(Path(args.output), fmt)
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


def _open_output(output: str | None, resume: bool) -> tuple[IO[str], bool]:
    """The stream to write, and whether it already holds earlier results to append to."""
    if output in (None, "-"):
        return sys.stdout, False
    path = Path(output)
    if resume and path.exists() and path.stat().st_size > 0:
        stream = path.open("a", encoding="utf-8", newline="")
        with path.open("rb") as existing:
            existing.seek(-1, io.SEEK_END)
            if existing.read(1) != b"\n":  # an interrupted run left half a line: end it first
                stream.write("\n")
        return stream, True
    return path.open("w", encoding="utf-8", newline=""), False


def already_done(path: Path, fmt: str) -> set[str]:
    """The sources an earlier run wrote successfully to ``path`` (failed ones are tried again)."""
    done: set[str] = set()
    with path.open(encoding="utf-8", newline="", errors="replace") as stream:
        if fmt == "jsonl":
            for line in stream:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("source"), str) and _truthy(record.get("ok")):
                    done.add(record["source"])
        else:
            for row in csv.DictReader(stream):
                if row.get("source") and _truthy(row.get("ok")):
                    done.add(row["source"])
    return done


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
        self.stream.write(f"{confidence:>10}  {label:<32}  {result.source}\n")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


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
                print(f"  {label:<{width}}  {count:>6}", file=stream)
        if self.failures:
            print("failures:", file=stream)
            for result in self.failures[: self.SHOWN_FAILURES]:
                status = f"HTTP {result.error_status}: " if result.error_status is not None else ""
                print(f"  {result.source}: {status}{result.error_message}", file=stream)
            if self.failed > self.SHOWN_FAILURES:
                print(f"  ... and {self.failed - self.SHOWN_FAILURES} more", file=stream)
        if output:
            print(f"results in {output}", file=stream)


if __name__ == "__main__":
    sys.exit(main())
