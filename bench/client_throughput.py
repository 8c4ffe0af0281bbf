"""Client throughput against the running service: many-photo requests beside one request per photo.

    .venv/bin/python -m bench.client_throughput [--data ../shared/data/plantvillage/train] [--count 1000]
        [--loop-count N] [--model plantnet] [--batch-size 32] [--concurrency 2] [--json FILE]

Starts the Procfile's web command on 127.0.0.1 (the shipped model unless ``--model``), then drives it
with ``plantnet_client.Client``:

* ``client.diagnose_many``: ``--count`` photos (the images under ``--data`` spread over its folders and
  the sample leaves, repeated to reach the count), ``--batch-size`` photos per /Diagnosis/predictions
  request, ``--concurrency`` requests in flight;
* a one-request-per-photo loop: ``client.diagnose`` per photo, one after the other (``--loop-count``,
  default the same count);
* the many-photo endpoint alone: requests of 32 photos, one at a time (img/s and ms per request),
  to see that one request of 32 runs about as fast as the engine allows.

Peak memory (VmHWM) of the server and of this (client) process is reset before each route
and read after it. On a machine shared with other work the numbers are noisy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.bulk import (
    DEFAULT_DATA,
    descendants,
    linked_folder,
    photo_set,
    print_results,
    reset_peak,
    vm_hwm_mb,
)
from tests.support import PREDICTIONS, SHIPPED_MODEL, Server, model_env

MANY = 32


def server_pids(server: Server) -> list[int]:
    return [server.process.pid, *descendants(server.process.pid)]


def measure(name: str, server: Server, work) -> dict[str, Any]:
    """Run ``work()`` (returns photos answered, photos failed, extra fields) with fresh memory peaks."""
    for pid in [os.getpid(), *server_pids(server)]:
        reset_peak(pid)
    began = time.monotonic()
    answered, failed, extra = work()
    took = time.monotonic() - began
    print(f"  {name}: {answered} photos in {took:.1f} s", file=sys.stderr)
    return {
        "route": name,
        "photos": answered,
        "failed": failed,
        "seconds": round(took, 2),
        "images_per_s": round(answered / took, 1) if took > 0 else None,
        "server_vm_hwm_mb": round(max(vm_hwm_mb(pid) for pid in server_pids(server)), 1),
        "client_vm_hwm_mb": round(vm_hwm_mb(os.getpid()), 1),
        **extra,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.client_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder of photos (default: %(default)s)")
    parser.add_argument("--count", type=int, default=1000, help="photos for diagnose_many (default: %(default)s)")
    parser.add_argument("--loop-count", type=int, help="photos for the one-per-request loop (default: --count)")
    parser.add_argument("--requests", type=int, default=10, help="requests of 32 photos (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="the model directory")
    parser.add_argument("--batch-size", type=int, default=32, help="photos per request (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from plantnet_client import Client

    args = parse(argv)
    photos = photo_set(args.data, args.count)
    loop_photos = photos[: args.loop_count or args.count]
    results: dict[str, Any] = {"photos": len(photos), "data": str(args.data), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-client-") as temporary:
        folder = linked_folder(photos, Path(temporary) / "photos")
        server = Server(model_env(args.model, PLANTNET_LOG_LEVEL="WARNING"), output=subprocess.DEVNULL)
        try:
            results["server_ready_s"] = round(server.wait_healthy(600), 1)
            print(f"server ready in {results['server_ready_s']} s; {len(photos)} photos", file=sys.stderr)
            with Client(server.url, timeout=600) as client:
                client.diagnose(str(photos[0]))  # one request outside the timings

                def many() -> tuple[int, int, dict]:
                    done = list(
                        client.diagnose_many([str(folder)], batch_size=args.batch_size, concurrency=args.concurrency)
                    )
                    failed = sum(not r.ok for r in done)
                    return len(done) - failed, failed, {"batch_size": args.batch_size, "concurrency": args.concurrency}

                def loop() -> tuple[int, int, dict]:
                    done = [client.diagnose(str(photo)) for photo in loop_photos]
                    failed = sum(not r.ok for r in done)
                    return len(done) - failed, failed, {}

                results["client_many"] = measure("client.diagnose_many", server, many)
                results["client_loop"] = measure("one request per photo", server, loop)

            bodies = [
                [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[i : i + MANY]]
                for i in range(0, MANY * args.requests, MANY)
            ]
            bodies = [body for body in bodies if len(body) == MANY]

            def endpoint() -> tuple[int, int, dict]:
                answered = failed = 0
                latencies = []
                with httpx.Client(base_url=server.url, timeout=600) as http:
                    for body in bodies:
                        began = time.monotonic()
                        response = http.post(PREDICTIONS, files=body)
                        latencies.append(time.monotonic() - began)
                        response.raise_for_status()
                        statuses = [item["status"] for item in response.json()["results"]]
                        answered += statuses.count(200)
                        failed += len(statuses) - statuses.count(200)
                ms = sorted(1000 * t for t in latencies)
                return (
                    answered,
                    failed,
                    {
                        "photos_per_request": MANY,
                        "requests": len(bodies),
                        "ms_per_request_median": round(ms[len(ms) // 2], 1) if ms else None,
                    },
                )

            results["endpoint_32"] = measure("/Diagnosis/predictions, 32 per request", server, endpoint)
        finally:
            server.stop()

    many, loop, endpoint32 = results["client_many"], results["client_loop"], results["endpoint_32"]
    if many["images_per_s"] and loop["images_per_s"]:
        results["many_over_loop"] = round(many["images_per_s"] / loop["images_per_s"], 2)
    rows = [("route", "photos", "img/s", "server peak MB", "client peak MB")]
    for item in (many, loop, endpoint32):
        rows.append(
            (
                item["route"],
                str(item["photos"]),
                f"{item['images_per_s']}",
                f"{item['server_vm_hwm_mb']:.0f}",
                f"{item['client_vm_hwm_mb']:.0f}",
            )
        )
    return print_results(rows, results, args.json)


if __name__ == "__main__":
    main()
