"""Bulk classification without HTTP: a folder or an S3 prefix in, one JSON line per photo out.

    python -m util.bulk SOURCE [SOURCE...] --out results.jsonl [--top-k N] [--crop CROP] [--batch-size B]
        [--workers W] [--resume] [--ray] [--ray-address ADDR] [--ray-actors N] [--model DIR]

SOURCE is a folder (recursive, image extensions), a file, or ``s3://bucket/prefix`` (boto3's
standard credential chain; ``AWS_ENDPOINT_URL`` for S3-compatible stores such as MinIO). Sources
are listed by the client's own expansion (``plantnet_client.sources``), so a folder or prefix
names the same photos for ``plantnet diagnose`` and here.

Every photo goes through :class:`util.service.DiagnosisService` (decode, batcher, engine, the
in-domain verdict, top-k) and its result is marshalled with the API's own response model
(``util.api.diagnosis.diagnosis_model``), so a line's ``diagnosis`` is exactly the body that
``POST /Diagnosis/prediction`` answers for the same photo, whatever fields the model gains::

    {"source": "leaves/a.jpg", "status": 200, "diagnosis": {"label": ..., "confidence": ..., ...}}
    {"source": "leaves/notes.gif", "status": 415, "message": "..."}
    {"source": "s3://b/gone.jpg", "status": null, "message": "cannot read s3://b/gone.jpg: ..."}

``status`` is the HTTP status the API would answer for that photo; ``null`` means the photo could
not be read at all (a missing file, one over PLANTNET_MAX_UPLOAD_BYTES), 500 that diagnosing it
failed unexpectedly: each is recorded and the run goes on. ``--resume`` skips photos already
answered in the output (200 or a 4xx, which would not change) and retries the rest (unreadable,
500, 503), appending to the file. A non-empty ``--out`` needs ``--resume`` or ``--force``.

Local mode: ``--workers`` threads read and decode photos in parallel (PIL releases the GIL), each
handing ``--batch-size`` photos at a time to the one batcher, which runs the engine on full batches.

``--ray``: the same work on Ray Data (optional: ``pip install -r requirements-ray.txt``): the photos
are read as binary files, ``map_batches`` runs them through actors that each hold one compiled
engine (the same service as above), and the driver writes the lines. Without ``--ray-address``
a local Ray with 2 CPUs is started; with it, an existing cluster is joined and this project is
shipped to it as the job's working directory (the model directory must be inside the project or
at the same path on every node).

Exit status: 0 when every photo was diagnosed, 1 when any failed (or none was found), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from util import messages
from util.config import PROJECT_ROOT, Settings, configure_logging

log = logging.getLogger(__name__)
RAY_MISSING = "--ray needs Ray Data, an optional requirement: .venv/bin/pip install -r requirements-ray.txt (ray[data])"
CLIENT_MISSING = "util.bulk lists sources with the client package: .venv/bin/pip install './client[s3]'"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
FINAL = range(200, 500)  # answers that would not change on a second try: skipped by --resume
BULK_TIMEOUT_S = 600.0  # a photo may wait behind the whole pipeline, not behind one request
LOCAL_RAY_CPUS = 2
LOCAL_RAY_OBJECT_STORE = 512 * 1024 * 1024
RAY_EXCLUDES = [".git", ".venv", "venv", "runs", "**/.cache", "**/__pycache__", "tests/data", "deploy"]


# --- records ---------------------------------------------------------------------------------


def diagnosis_json(result: Any) -> dict:
    """The JSON the API answers for one diagnosis: marshalled with the API's own restx model and rules."""
    from util.api.diagnosis import answer, diagnosis_model

    return answer(result, diagnosis_model)


def record(source: str, result: Any) -> dict:
    """One output line: the diagnosis (status 200) or the photo's own failure (status and message)."""
    from util.service import ImageFailure

    if isinstance(result, ImageFailure):
        return {"source": source, "status": result.status, "message": result.message}
    return {"source": source, "status": 200, "diagnosis": diagnosis_json(result)}


def unreadable(source: str, message: str) -> dict:
    return {"source": source, "status": None, "message": message}


# --- the engine, shared by local mode and each Ray actor --------------------------------------


@dataclass(frozen=True)
class Options:
    model_dir: Path | None = None
    batch_size: int | None = None  # None: PLANTNET_MAX_BATCH_SIZE (16 unless set)
    workers: int = 0  # 0: one per core, at least 2
    top_k: int | None = None  # None: PLANTNET_DEFAULT_TOP_K
    crop: str | None = None  # a crop hint for every photo (the model's spelling; see util.labels.resolve_crop)


def bulk_settings(options: Options) -> Settings:
    """The service's settings (PLANTNET_* as for the server), with a queue and timeout sized for bulk work."""
    overrides: dict[str, Any] = {}
    if options.model_dir is not None:
        overrides["model_dir"] = Path(options.model_dir)
    if options.batch_size is not None:
        overrides["max_batch_size"] = options.batch_size
    settings = Settings.from_env(**overrides)
    in_flight = 2 * settings.max_batch_size * worker_count(options.workers)
    return replace(
        settings,
        max_queue=max(settings.max_queue, in_flight),
        request_timeout_s=max(settings.request_timeout_s, BULK_TIMEOUT_S),
    ).checked()


def worker_count(workers: int) -> int:
    return workers or max(2, os.cpu_count() or 1)


class BulkDiagnoser:
    """One DiagnosisService (engine, batcher, verdict) and a thread pool that decodes photos in parallel.

    ``diagnose`` takes (source, bytes or an error message) pairs and answers one record per pair,
    in order. Its photos are split among the workers; each worker decodes its share and submits it
    to the batcher, which joins concurrent shares into full batches.
    """

    def __init__(self, options: Options):
        from util.service import DiagnosisService

        self.settings = bulk_settings(options)
        self.batch_size = self.settings.max_batch_size
        self.workers = worker_count(options.workers)
        self.top_k = self.settings.default_top_k if options.top_k is None else options.top_k
        if not 1 <= self.top_k <= self.settings.max_top_k:
            raise ValueError(f"--top-k must be from 1 to {self.settings.max_top_k} (PLANTNET_MAX_TOP_K)")
        self.service = DiagnosisService(self.settings)
        self.crop = self.service.resolve_crop(options.crop)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")

    def submit(self, items: Sequence[tuple[str, bytes | str]]) -> Future:
        """Diagnose ``items`` (at most one batch) on a worker thread; the future holds their records."""
        return self.pool.submit(self.diagnose_chunk, items)

    def diagnose(self, items: Sequence[tuple[str, bytes | str]]) -> list[dict]:
        """Diagnose any number of items with every worker; one record per item, in order."""
        share = max(1, -(-len(items) // self.workers))
        futures = [self.submit(items[i : i + share]) for i in range(0, len(items), share)]
        return [line for future in futures for line in future.result()]

    def diagnose_chunk(self, items: Sequence[tuple[str, bytes | str]]) -> list[dict]:
        """Read failures (a str instead of bytes) become records; the rest go to the service together.

        When the service fails the chunk as a whole (overloaded, an unexpected error in one photo),
        each photo is tried on its own, so one photo's failure is its own record and the run goes on.
        """
        readable = [(i, data) for i, (_, data) in enumerate(items) if isinstance(data, bytes | bytearray)]
        photos = [bytes(data) for _, data in readable]
        try:
            results = self.service.diagnose_many(photos, self.top_k, crop=self.crop) if readable else []
            answered = {i: record(items[i][0], result) for (i, _), result in zip(readable, results, strict=True)}
        except Exception:  # noqa: BLE001 - narrowed below, photo by photo
            answered = {i: self.diagnose_alone(items[i][0], data) for i, data in readable}
        return [
            answered[i] if i in answered else unreadable(source, str(data)) for i, (source, data) in enumerate(items)
        ]

    def diagnose_alone(self, source: str, data: bytes) -> dict:
        """One photo's record; an unexpected failure is status 500 with its reason (retried by --resume)."""
        try:
            return record(source, self.service.diagnose_many([bytes(data)], self.top_k, crop=self.crop)[0])
        except Exception as error:  # noqa: BLE001 - recorded against this photo; the run goes on
            log.warning("%s: diagnosis failed: %s: %s", source, type(error).__name__, error)
            return {"source": source, "status": 500, "message": f"diagnosis failed: {type(error).__name__}: {error}"}

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.service.close()


# --- sources and output ------------------------------------------------------------------------


def expand(sources: Sequence[str], endpoint_url: str | None = None, max_bytes: int | None = None) -> list[Any]:
    """Every photo of every source (plantnet_client.sources.Photo), listed before any is read.

    ``max_bytes`` bounds what is read of each photo (default PLANTNET_MAX_UPLOAD_BYTES, as the API's).
    """
    try:
        from plantnet_client.sources import Expander
    except ImportError as error:
        raise SystemExit(CLIENT_MISSING) from error
    limit = max_bytes or Settings.from_env().max_upload_bytes
    with Expander(endpoint_url=endpoint_url, max_download_bytes=limit) as expander:
        return list(expander.expand(list(sources)))


def read_photo(photo: Any) -> bytes | str:
    """The photo's bytes, or why they cannot be had (plantnet_client.sources.SourceError)."""
    from plantnet_client.sources import SourceError

    try:
        return photo.read()
    except SourceError as error:
        return str(error)


def done_sources(path: Path) -> set[str]:
    """Sources with a final answer in an earlier run's output (a half-written last line is ignored)."""
    done: set[str] = set()
    if not path.exists():
        return done
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict) and isinstance(item.get("status"), int) and item["status"] in FINAL:
                done.add(item.get("source"))
    return done


def open_output(path: Path, resume: bool) -> IO[str]:
    """Append when resuming (after cutting a half-written last line), else start afresh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if resume and path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
        return path.open("a", encoding="utf-8")
    return path.open("w", encoding="utf-8")


class Tally:
    """Counts what was written; the summary at the end."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()

    def add(self, item: dict) -> None:
        self.statuses[str(item["status"])] += 1
        if item["status"] == 200:
            self.labels[item["diagnosis"]["label"]] += 1

    @property
    def written(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.written - self.statuses["200"]


class Progress:
    """A rich progress bar on a terminal; silent otherwise (logs, CI, tests)."""

    def __init__(self, total: int, description: str, enabled: bool | None = None):
        enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
            )
            self._task = self._bar.add_task(description, total=total)
            self._bar.start()

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def write(out: IO[str], items: Iterable[dict], tally: Tally, progress: Progress) -> None:
    count = 0
    for item in items:
        out.write(json.dumps(item, ensure_ascii=False) + "\n")
        tally.add(item)
        count += 1
    out.flush()
    progress.advance(count)


def chunks(photos: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(photos)
    while chunk := list(islice(iterator, size)):
        yield chunk


# --- local mode ----------------------------------------------------------------------------------


def run_local(
    photos: Sequence[Any], out: IO[str], options: Options, progress: Progress, bulk: BulkDiagnoser | None = None
) -> Tally:
    """Each chunk of one batch is read and decoded on a worker; lines are written in source order.

    ``bulk``: an engine already loaded (benchmarks time the steady state); by default one is made and closed.
    """
    tally = Tally()
    owned = bulk is None
    bulk = BulkDiagnoser(options) if bulk is None else bulk
    try:
        in_flight: deque[Future] = deque()
        for chunk in chunks(photos, bulk.batch_size):
            in_flight.append(bulk.pool.submit(read_and_diagnose, bulk, chunk))
            while len(in_flight) >= 2 * bulk.workers:
                write(out, in_flight.popleft().result(), tally, progress)
        while in_flight:
            write(out, in_flight.popleft().result(), tally, progress)
    finally:
        if owned:
            bulk.close()
    return tally


def read_and_diagnose(bulk: BulkDiagnoser, photos: Sequence[Any]) -> list[dict]:
    return bulk.diagnose_chunk([(photo.source, read_photo(photo)) for photo in photos])


# --- Ray -------------------------------------------------------------------------------------------


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # the [data] extra
    except ImportError as error:
        raise SystemExit(RAY_MISSING) from error
    return ray


class RayDiagnoser:
    """A Ray Data actor: one BulkDiagnoser (one compiled engine) for its lifetime; a batch of files in, lines out."""

    def __init__(self, options: Options, sources: dict[str, str]):
        configure_logging(Settings.from_env().log_level)
        self.bulk = BulkDiagnoser(options)
        self.sources = sources  # Ray's path column -> the source as listed

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        sources = [self.sources.get(str(path), str(path)) for path in batch["path"]]
        lines = self.bulk.diagnose(list(zip(sources, (bytes(data) for data in batch["bytes"]), strict=True)))
        return {"line": [json.dumps(line, ensure_ascii=False) for line in lines]}


def ray_paths(photos: Sequence[Any], endpoint_url: str | None) -> tuple[list[str], Any, dict[str, str]]:
    """The paths Ray reads, the filesystem to read them with, and Ray's path -> the listed source."""
    if not photos:
        return [], None, {}
    s3 = [p.source.startswith("s3://") for p in photos]
    if any(s3) and not all(s3):
        raise SystemExit("--ray reads either local folders or s3:// prefixes in one run, not both")
    if all(s3):
        paths = [p.source.removeprefix("s3://") for p in photos]
        return paths, s3_filesystem(endpoint_url), dict(zip(paths, (p.source for p in photos), strict=True))
    paths = [os.path.abspath(p.source) for p in photos]
    return paths, None, dict(zip(paths, (p.source for p in photos), strict=True))


def s3_filesystem(endpoint_url: str | None) -> Any:
    """pyarrow's S3 filesystem with the standard credential chain and AWS_ENDPOINT_URL honoured."""
    from pyarrow import fs

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    options: dict[str, Any] = {"region": region} if region else {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme, region=region or "us-east-1")
    return fs.S3FileSystem(**options)


def start_ray(address: str | None) -> Any:
    """Join ``address``, or start a bounded local Ray (2 CPUs, no dashboard); PLANTNET_* reach the actors."""
    ray = import_ray()
    settings = {name: value for name, value in os.environ.items() if name.startswith("PLANTNET_")}
    if address:
        runtime_env = {"working_dir": str(PROJECT_ROOT), "excludes": RAY_EXCLUDES, "env_vars": settings}
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
    else:
        pythonpath = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
        ray.init(
            num_cpus=LOCAL_RAY_CPUS,
            include_dashboard=False,
            object_store_memory=LOCAL_RAY_OBJECT_STORE,
            runtime_env={"env_vars": {**settings, "PYTHONPATH": pythonpath}},
            logging_level=logging.WARNING,
        )
    return ray


def run_ray(
    photos: Sequence[Any],
    out: IO[str],
    options: Options,
    progress: Progress,
    address: str | None = None,
    actors: int = 1,
    endpoint_url: str | None = None,
) -> Tally:
    tally = Tally()
    if not photos:
        return tally
    ray = import_ray()
    started = not ray.is_initialized()  # a Ray already running in this process (a notebook, a test) is used as is
    if started:
        start_ray(address)
    try:
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows one bar
        context.execution_options.preserve_order = True  # lines in source order, as in local mode
        paths, filesystem, sources = ray_paths(photos, endpoint_url)
        model_dir = Path(options.model_dir).resolve() if options.model_dir is not None else None
        if address and model_dir is not None and model_dir.is_relative_to(PROJECT_ROOT):
            model_dir = model_dir.relative_to(PROJECT_ROOT)  # inside the working dir shipped to the cluster
        options = replace(options, model_dir=model_dir)
        batch_size = bulk_settings(options).max_batch_size * worker_count(options.workers)
        dataset = ray.data.read_binary_files(paths, include_paths=True, filesystem=filesystem)
        lines = dataset.map_batches(
            RayDiagnoser,
            fn_constructor_args=(options, sources),
            batch_size=batch_size,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=actors),
            num_cpus=1,
        )
        for batch in lines.iter_batches(batch_size=None, batch_format="numpy"):
            write(out, (json.loads(line) for line in batch["line"]), tally, progress)
    finally:
        if started:
            ray.shutdown()
    return tally


# --- command line -----------------------------------------------------------------------------------


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m util.bulk",
        description="Classify every photo of folders or s3:// prefixes with the engine directly (no HTTP); "
        "one JSON line per photo, the same JSON as the API.",
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="a folder, a file, or s3://bucket/prefix")
    parser.add_argument("--out", required=True, type=Path, help="the JSON-lines file to write")
    parser.add_argument("--top-k", type=positive, help="labels ranked per photo (default PLANTNET_DEFAULT_TOP_K)")
    parser.add_argument("--crop", help="the crop every photo shows ('Tomato'): diagnose among its labels only")
    parser.add_argument("--batch-size", type=positive, help="photos per engine call (default PLANTNET_MAX_BATCH_SIZE)")
    parser.add_argument("--workers", type=positive, help="threads reading and decoding photos (default: one per core)")
    parser.add_argument("--resume", action="store_true", help="skip photos already answered in --out; append the rest")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    parser.add_argument("--model", type=Path, help="the model directory (default PLANTNET_MODEL_DIR, else plantnet/)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (default AWS_ENDPOINT_URL)")
    parser.add_argument("--ray", action="store_true", help="run on Ray Data (pip install -r requirements-ray.txt)")
    parser.add_argument("--ray-address", help="join this Ray cluster (implies --ray); default: start a local Ray")
    parser.add_argument("--ray-actors", type=positive, default=1, help="engine actors on Ray (default 1)")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    use_ray = args.ray or bool(args.ray_address)
    if use_ray:
        import_ray()  # say how to install it before any work
    if not (args.resume or args.force) and args.out.is_file() and args.out.stat().st_size > 0:
        print(messages.output_not_empty(args.out), file=sys.stderr)
        return EXIT_USAGE
    if args.top_k is not None and args.top_k > settings.max_top_k:
        print(f"--top-k must be from 1 to {settings.max_top_k} (PLANTNET_MAX_TOP_K)", file=sys.stderr)
        return EXIT_USAGE
    try:
        crop = crop_hint(args.crop, args.model or settings.model_dir)
    except UnknownCrop as unknown:
        print(f"--crop: {unknown}", file=sys.stderr)
        return EXIT_USAGE
    options = Options(
        model_dir=args.model, batch_size=args.batch_size, workers=args.workers or 0, top_k=args.top_k, crop=crop
    )

    began = time.monotonic()
    photos = expand(args.sources, args.endpoint_url, settings.max_upload_bytes)
    skipped = 0
    if args.resume:
        done = done_sources(args.out)
        skipped = sum(p.source in done for p in photos)
        photos = [p for p in photos if p.source not in done]
    log.info("%d photos to classify (%d already done)", len(photos), skipped)
    progress = Progress(len(photos), "Ray" if use_ray else "bulk", args.progress)
    with open_output(args.out, args.resume) as out:
        try:
            if use_ray:
                tally = run_ray(photos, out, options, progress, args.ray_address, args.ray_actors, args.endpoint_url)
            else:
                tally = run_local(photos, out, options, progress)
        finally:
            progress.close()
    took = time.monotonic() - began
    summary(tally, skipped, took)
    return EXIT_OK if tally.written + skipped and not tally.failed else EXIT_FAILED


class UnknownCrop(ValueError):
    """--crop names no crop of the model; the message lists the ones it knows."""


def crop_hint(name: str | None, model_dir: Path) -> str | None:
    """The model's spelling of --crop (checked before any model is loaded), or None."""
    from util import messages
    from util.labels import UnknownCrop as NoSuchCrop
    from util.labels import crops, resolve_crop
    from util.model_dir import find_artifact

    if name is None or not name.strip():
        return None
    labels = find_artifact(model_dir).labels
    try:
        return resolve_crop(name, labels)
    except NoSuchCrop:
        raise UnknownCrop(messages.unknown_crop(name, crops(labels))) from None


def summary(tally: Tally, skipped: int, took: float) -> None:
    rate = tally.written / took if took > 0 else 0.0
    print(f"{tally.written} photos in {took:.1f} s ({rate:.1f} img/s); {skipped} skipped (resume)", file=sys.stderr)
    for label, count in tally.labels.most_common():
        print(f"  {count:6d}  {label}", file=sys.stderr)
    if tally.failed:
        failures = ", ".join(
            f"{count} x {status}" for status, count in sorted(tally.statuses.items()) if status != "200"
        )
        print(f"  failed: {failures}", file=sys.stderr)


if __name__ == "__main__":
    # Run as util.bulk (not __main__) so Ray pickles RayDiagnoser by reference, importable on its workers.
    from util.bulk import main as bulk_main

    sys.exit(bulk_main())
