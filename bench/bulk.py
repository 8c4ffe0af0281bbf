"""Bulk classification throughput: local mode against the engine's ceiling, and Ray with its start-up cost.

    .venv/bin/python -m bench.bulk [--data ../shared/data/plantvillage/train] [--count 1000]
        [--model plantnet] [--batch-size B] [--workers W] [--ceiling-seconds 3] [--no-ray] [--json FILE]

The photos are the images under ``--data`` (spread evenly over its folders) and the sample leaf
photos, repeated to reach ``--count``, linked into one temporary folder. Each route runs in its own
child process so its peak memory (VmHWM) is its own:

* local: ``util.bulk``'s local mode with its engine loaded and warmed up first, so img/s is the
  steady state; start-up (model load, warm-up) is reported beside it;
* Ray: a local Ray (2 CPUs) started as ``util.bulk --ray`` starts it; start-up overhead is the time
  from ``ray.init`` to the first line written (Ray, the actor, the model, warm-up); img/s after it
  is the steady state, and the overall rate includes everything. Its memory is the sum of the
  peaks of every Ray process (driver, raylet, GCS, workers): an upper bound.

The ceiling is ``python -m bench.ceiling MODEL`` (the bare engine on preprocessed batches); local
img/s is reported as a share of it (target: at least 90%). On a machine shared with other work the
numbers are noisy: run it when the machine is idle.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import ROOT, SAMPLES, SHIPPED_MODEL

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "plantvillage" / "train"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


# --- shared with bench/client_throughput.py ------------------------------------------------------


def photo_set(data: Path | None, count: int) -> list[Path]:
    """``count`` photo paths: the images under ``data`` spread evenly over it, then the samples, repeated."""
    pool: list[Path] = []
    if data is not None and data.is_dir():
        found = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        step = max(1, len(found) // count)
        pool = found[::step][:count]
    pool += sorted(p for p in SAMPLES.glob("*.jpg") if p.name != "plantnet_original_sample.jpg")
    return [pool[i % len(pool)] for i in range(count)]


def linked_folder(photos: list[Path], folder: Path) -> Path:
    """One folder of ``photos`` as symbolic links with unique names (a photo used twice is two sources)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, photo in enumerate(photos):
        (folder / f"{index:06d}{photo.suffix.lower()}").symlink_to(photo.resolve())
    return folder


def proc_status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of one process, MB."""
    value = proc_status(pid).get("VmHWM", "0 kB").split()[0]
    return int(value) / 1024


def reset_peak(pid: int) -> None:
    """Restart VmHWM from the current RSS (Linux >= 4.0); harmless where not allowed."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...)."""
    parents: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        ppid = proc_status(int(status.parent.name)).get("PPid", "").strip()
        if ppid.isdigit():
            parents.setdefault(int(ppid), []).append(int(status.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def ceiling(model: Path, seconds: float) -> dict[str, Any]:
    """``python -m bench.ceiling``: images/s of the bare engine per batch size."""
    command = [sys.executable, "-m", "bench.ceiling", str(model), str(seconds)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=quiet_env(), check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def quiet_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PLANTNET_LOG_LEVEL": "WARNING"}


def print_results(rows: list[tuple[str, ...]], results: dict[str, Any], json_path: Path | None) -> dict[str, Any]:
    """Print the table and the JSON; write the JSON to ``json_path`` if given."""
    print(table(rows))
    print(json.dumps(results, indent=2))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


# --- the child processes ----------------------------------------------------------------------------


class Recorder:
    """A file-like sink for util.bulk's lines: counts them, and notes when the first batch of lines arrived."""

    def __init__(self) -> None:
        self.lines = 0
        self.first: float | None = None  # when the first batch was flushed
        self.first_batch = 0  # how many lines it had
        self.statuses: dict[str, int] = {}

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.lines += 1
            status = str(json.loads(line)["status"])
            self.statuses[status] = self.statuses.get(status, 0) + 1
        return len(text)

    def flush(self) -> None:  # util.bulk flushes after each batch of lines
        if self.first is None and self.lines:
            self.first, self.first_batch = time.monotonic(), self.lines


def child_local(folder: Path, options: Any) -> dict[str, Any]:
    from util import bulk

    began = time.monotonic()
    diagnoser = bulk.BulkDiagnoser(options)
    if not diagnoser.service.ready.wait(600):
        raise RuntimeError("the engine did not warm up in 600 s")
    ready = time.monotonic()
    photos = bulk.expand([str(folder)])
    out = Recorder()
    bulk.run_local(photos, out, options, bulk.Progress(0, "", False), bulk=diagnoser)
    ended = time.monotonic()
    diagnoser.close()
    return {
        "route": "bulk local",
        "photos": out.lines,
        "statuses": out.statuses,
        "batch_size": diagnoser.batch_size,
        "workers": diagnoser.workers,
        "engine": f"{diagnoser.service.engine.name}/{diagnoser.service.engine.precision}",
        "startup_s": round(ready - began, 2),
        "seconds": round(ended - ready, 2),
        "images_per_s": round(out.lines / (ended - ready), 1),
        "vm_hwm_mb": round(vm_hwm_mb(os.getpid()), 1),
    }


def child_ray(folder: Path, options: Any) -> dict[str, Any]:
    from util import bulk

    began = time.monotonic()
    ray = bulk.start_ray(None)
    initialised = time.monotonic()
    photos = bulk.expand([str(folder)])
    out = Recorder()
    bulk.run_ray(photos, out, options, bulk.Progress(0, "", False))
    ended = time.monotonic()
    peaks = {pid: vm_hwm_mb(pid) for pid in [os.getpid(), *descendants(os.getpid())]}
    ray.shutdown()
    first = out.first or ended
    after = out.lines - out.first_batch  # lines that came after start-up
    return {
        "route": "bulk Ray (local, 2 CPUs)",
        "photos": out.lines,
        "statuses": out.statuses,
        "ray_init_s": round(initialised - began, 2),
        "startup_s": round(first - began, 2),
        "seconds": round(ended - began, 2),
        "images_per_s": round(out.lines / (ended - began), 1),
        # only meaningful over many batches: Ray hands results back in blocks
        "steady_images_per_s": round(after / (ended - first), 1) if after >= 4 * out.first_batch else None,
        "vm_hwm_mb": round(sum(peaks.values()), 1),
        "processes": len(peaks),
    }


def run_child(mode: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.bulk", "--child", mode, "--folder", str(folder), "--model", str(args.model)]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    if args.workers:
        command += ["--workers", str(args.workers)]
    with tempfile.TemporaryFile("w+") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=quiet_env())
        if done.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{mode} run failed ({done.returncode}):\n{log.read()[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the command --------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder of photos (default: %(default)s)")
    parser.add_argument("--count", type=int, default=1000, help="photos per route (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="the model directory")
    parser.add_argument("--batch-size", type=int, help="util.bulk --batch-size (default PLANTNET_MAX_BATCH_SIZE)")
    parser.add_argument("--workers", type=int, help="util.bulk --workers (default one per core)")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0, help="seconds per batch size in bench.ceiling")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray route")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--child", choices=("local", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse(argv)
    if args.child:
        from util.bulk import Options

        options = Options(model_dir=args.model, batch_size=args.batch_size, workers=args.workers or 0)
        result = (child_local if args.child == "local" else child_ray)(args.folder, options)
        print(json.dumps(result))
        return None

    photos = photo_set(args.data, args.count)
    results: dict[str, Any] = {"photos": len(photos), "data": str(args.data), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as temporary:
        folder = linked_folder(photos, Path(temporary) / "photos")
        print(f"{len(photos)} photos; engine ceiling...", file=sys.stderr)
        results["ceiling"] = ceiling(args.model, args.ceiling_seconds)
        print("bulk local...", file=sys.stderr)
        results["local"] = run_child("local", folder, args)
        if not args.no_ray:
            try:
                import ray  # noqa: F401 - only to say whether it is installed
            except ImportError:
                results["ray"] = {"skipped": "Ray is not installed: pip install -r requirements-ray.txt"}
            else:
                print("bulk on Ray...", file=sys.stderr)
                results["ray"] = run_child("ray", folder, args)
    batches = results["ceiling"]["batches"]
    best = max(item["images_per_s"] for item in batches.values())
    at_size = batches.get(str(results["local"]["batch_size"]), {}).get("images_per_s")
    results["local"]["share_of_ceiling"] = round(results["local"]["images_per_s"] / best, 3)
    if "seconds" in results.get("ray", {}):  # what Ray costs beyond local mode, start-up included
        local_total = results["local"]["startup_s"] + results["local"]["seconds"]
        results["ray"]["overhead_vs_local_s"] = round(results["ray"]["seconds"] - local_total, 2)
    rows = [("route", "img/s", "share of ceiling", "start-up s", "peak MB (VmHWM)")]
    rows.append((f"engine ceiling ({results['ceiling']['engine']})", f"{best:.1f}", "1.00", "", ""))
    if at_size:
        rows.append((f"  at batch {results['local']['batch_size']}", f"{at_size:.1f}", f"{at_size / best:.2f}", "", ""))
    local = results["local"]
    rows.append(
        (
            "bulk local",
            f"{local['images_per_s']:.1f}",
            f"{local['share_of_ceiling']:.2f}",
            f"{local['startup_s']:.1f}",
            f"{local['vm_hwm_mb']:.0f}",
        )
    )
    ray_result = results.get("ray", {})
    if "images_per_s" in ray_result:
        steady = ray_result["steady_images_per_s"]
        rows.append(
            (
                "bulk Ray, overall",
                f"{ray_result['images_per_s']:.1f}",
                f"{ray_result['images_per_s'] / best:.2f}",
                f"{ray_result['startup_s']:.1f}",
                f"{ray_result['vm_hwm_mb']:.0f}",
            )
        )
        if steady:
            rows.append(("bulk Ray, after start-up", f"{steady:.1f}", f"{steady / best:.2f}", "", ""))
    return print_results(rows, results, args.json)


if __name__ == "__main__":
    main()
