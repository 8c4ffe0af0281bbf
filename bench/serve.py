"""Serving benchmark: the production command against a naive baseline, on this machine.

    python -m bench.serve                      # full run, about 4 minutes
    python -m bench.serve --grid               # short runs over worker/thread/batch settings

Starts the Procfile's web command on 127.0.0.1, waits for GET /health, and drives it with a
closed-loop multipart load generator (each client sends its next request when the previous
one is answered) at 1, 4 and 16 clients on the 256 px leaf JPEGs of sample_images/, and at 4
clients on the 12-megapixel photo. Then does the same for bench/naive_app.py under one sync worker (the original
design), measures the bare engine's ceiling on preprocessed batches, and prints a Markdown
table with ratios and the issue's targets. Raw numbers go to --out (JSON).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tests.support import BIG_PHOTO, PREDICT, ROOT, Server, leaf_samples, multipart_body, procfile_web_command

SERVICE = procfile_web_command()
BOUNDARY = "plantnet-bench"
BASELINE = ["gunicorn", "--workers", "1", "--worker-class", "sync", "--timeout", "300", "bench.naive_app:app"]


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def leaf_request(name: str, data: bytes, boundary: str = BOUNDARY) -> tuple[bytes, dict[str, str]]:
    """Encode one upload (once, by default, so the load generator spends its CPU on sending, not encoding)."""
    body = multipart_body([("image", name, data)], boundary)
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body))}


def with_fresh_boundary(name: str, data: bytes) -> tuple[bytes, dict[str, str]]:
    """The upload as curl, browsers and requests send it: a new random boundary each time."""
    return leaf_request(name, data, f"------------------------{os.urandom(8).hex()}")


def drive(
    url: str,
    payloads: list[tuple[str, bytes]],
    clients: int,
    duration: float,
    path: str = PREDICT,
    fresh_boundaries: bool = False,
) -> LoadResult:
    """Closed loop: ``clients`` threads each POST ``path`` a photo, wait for the answer, send the next.

    ``fresh_boundaries``: every request has its own multipart boundary, as real clients send them
    (a server that compiles a pattern per boundary pays for it then); else one pre-encoded body per photo.

    A light client (http.client, keep-alive, pre-encoded bodies): it shares the CPU with the
    server, so every cycle it spends is one the service does not get.
    """
    host, port = url.removeprefix("http://").split(":")
    bodies = [leaf_request(name, data) for name, data in payloads]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        for index, (body, headers) in enumerate(itertools.islice(itertools.cycle(bodies), offset, None)):
            if time.monotonic() >= stop_at:
                break
            if fresh_boundaries:
                body, headers = with_fresh_boundary(*payloads[(offset + index) % len(payloads)])
            began = time.perf_counter()
            try:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=60)
                ok = False
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)
                errors[0] += not ok
        connection.close()

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - began
    ms = np.array(latencies) * 1000
    return LoadResult(
        clients,
        len(latencies),
        errors[0],
        round(seconds, 2),
        round(len(latencies) / seconds, 2),
        *(round(float(np.percentile(ms, q)), 1) if len(ms) else float("nan") for q in (50, 95, 99)),
    )


def measure(command: list[str], env: dict[str, str], clients: list[int], photo_clients: int, duration: float) -> dict:
    """Start one server, warm it, run every load level, read the worker's RSS, stop it."""
    server = Server(env, command, output=subprocess.DEVNULL)
    try:
        ready_s = server.wait_healthy(300)
        leaves = leaf_samples()
        drive(server.url, leaves, max(clients), min(3.0, duration))  # warm-up, not reported
        rss_after_warmup = server.worker_rss_mb()
        results = {f"leaf_c{c}": asdict(drive(server.url, leaves, c, duration)) for c in clients}
        if photo_clients:
            results[f"photo_c{photo_clients}"] = asdict(
                drive(server.url, [(BIG_PHOTO.name, BIG_PHOTO.read_bytes())], photo_clients, duration)
            )
        return {
            "ready_s": round(ready_s, 2),
            "rss_mb_after_warmup": round(rss_after_warmup, 1),
            "rss_mb": round(server.worker_rss_mb(), 1),
            "loads": results,
        }
    finally:
        server.stop()


def engine_ceiling(model_dir: Path, env: dict[str, str], seconds: float = 3.0) -> dict:
    """Images/s of the bare engine on preprocessed random batches, per batch size, in a child process."""
    env = {**os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.ceiling", str(model_dir), str(seconds)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["ceiling_images_per_s"] = max(v["images_per_s"] for v in result["batches"].values())
    return result


def targets(service: dict, baseline: dict | None, ceiling: dict) -> list[tuple[str, str, bool]]:
    """The targets this run measured (a load left out by --clients or --photo-clients has no row)."""
    loads = service["loads"]
    rows = []
    if "leaf_c16" in loads:
        c16 = loads["leaf_c16"]["images_per_s"]
        rows.append(("16 clients, 256px JPEGs: >= 40 img/s", f"{c16:.1f} img/s", c16 >= 40))
        share = c16 / ceiling["ceiling_images_per_s"]
        rows.append(("16 clients: >= 60% of engine ceiling", f"{100 * share:.0f}%", share >= 0.6))
    if "leaf_c1" in loads:
        p50 = loads["leaf_c1"]["p50_ms"]
        rows.append(("1 client: median <= 40 ms", f"{p50:.1f} ms", p50 <= 40))
    if "photo_c4" in loads:
        photos = loads["photo_c4"]["images_per_s"]
        rows.append(("12 MP photo, 4 clients: >= 12 img/s", f"{photos:.1f} img/s", photos >= 12))
    rows += [
        ("worker RSS <= 600 MB", f"{service['rss_mb']:.0f} MB", service["rss_mb"] <= 600),
        ("ready <= 15 s", f"{service['ready_s']:.1f} s", service["ready_s"] <= 15),
    ]
    if baseline:
        ratios = [r for _, _, r in ratio_rows(service, baseline)]
        rows.append(("every figure >= 10x the baseline", f"min {min(ratios):.1f}x", min(ratios) >= 10))
    return rows


def ratio_rows(service: dict, baseline: dict) -> list[tuple[str, str, float]]:
    rows = []
    for key, mine in service["loads"].items():
        base = baseline["loads"].get(key)
        if not base:
            continue
        rows.append((key, "img/s", mine["images_per_s"] / max(base["images_per_s"], 1e-9)))
        for q in ("p50_ms", "p95_ms", "p99_ms"):
            rows.append((key, q, base[q] / max(mine[q], 1e-9)))
    return rows


def markdown(service: dict, baseline: dict | None, ceiling: dict) -> str:
    lines = [
        "| load | service img/s | p50 / p95 / p99 ms | errors | baseline img/s | baseline p50 / p95 / p99 ms |"
        " throughput x | p50 x |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, mine in service["loads"].items():
        base = (baseline or {"loads": {}})["loads"].get(key)
        lat = f"{mine['p50_ms']:.0f} / {mine['p95_ms']:.0f} / {mine['p99_ms']:.0f}"
        if base:
            blat = f"{base['p50_ms']:.0f} / {base['p95_ms']:.0f} / {base['p99_ms']:.0f}"
            lines.append(
                f"| {key} | {mine['images_per_s']:.1f} | {lat} | {mine['errors']} | "
                f"{base['images_per_s']:.2f} | {blat} | {mine['images_per_s'] / base['images_per_s']:.1f} "
                f"| {base['p50_ms'] / mine['p50_ms']:.1f} |"
            )
        else:
            lines.append(f"| {key} | {mine['images_per_s']:.1f} | {lat} | {mine['errors']} | | | | |")
    batches = ", ".join(
        f"bs{b}: {v['images_per_s']:.0f} img/s ({v['ms_per_batch']:.1f} ms)" for b, v in ceiling["batches"].items()
    )
    lines += [
        "",
        f"Engine {ceiling['engine']} at {ceiling['input_size']} px, preprocessed batches: {batches}.",
        f"Worker RSS {service['rss_mb']:.0f} MB (after warm-up {service['rss_mb_after_warmup']:.0f} MB); "
        f"ready {service['ready_s']:.1f} s after start.",
    ]
    if baseline:
        lines.append(f"Baseline worker RSS {baseline['rss_mb']:.0f} MB; ready {baseline['ready_s']:.1f} s.")
    lines += ["", "| target | measured | |", "|---|---:|---|"]
    lines += [
        f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |" for name, value, ok in targets(service, baseline, ceiling)
    ]
    return "\n".join(lines)


def parse_env(pairs: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in pairs)


def run_grid(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Short 16-client runs over the settings worth choosing by measurement."""
    grid = [
        {"PLANTNET_SERVER_THREADS": t, "PLANTNET_MAX_BATCH_SIZE": b, "PLANTNET_MAX_WAIT_MS": m}
        for t, b, m in [
            ("8", "16", "4"),
            ("16", "16", "4"),
            ("4", "16", "4"),
            ("8", "8", "4"),
            ("8", "32", "4"),
            ("8", "16", "1"),
            ("8", "16", "10"),
        ]
    ]
    for settings in grid:
        result = measure(SERVICE, {**env, **settings}, [16], 0, args.duration)
        load = result["loads"]["leaf_c16"]
        print(
            json.dumps(settings),
            f"{load['images_per_s']:.1f} img/s p50 {load['p50_ms']:.0f} ms",
            f"rss {result['rss_mb']:.0f} MB",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=ROOT / "plantnet")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per load level")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--photo-clients", type=int, default=4)
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service, repeatable")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--grid", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = p.parse_args()
    env = {"PLANTNET_MODEL_DIR": str(args.model_dir.resolve()), **parse_env(args.env)}
    if args.grid:
        run_grid(args, env)
        return
    clients = [int(c) for c in args.clients.split(",")]
    service = measure(SERVICE, env, clients, args.photo_clients, args.duration)
    print("service:", json.dumps(service), flush=True)
    ceiling = engine_ceiling(args.model_dir, env)
    print("engine:", json.dumps(ceiling), flush=True)
    baseline = None
    if not args.skip_baseline:
        baseline = measure(BASELINE, env, clients, args.photo_clients, args.duration)
        print("baseline:", json.dumps(baseline), flush=True)
    report = {
        "service": service,
        "engine": ceiling,
        "baseline": baseline,
        "env": env,
        "duration_s": args.duration,
        "cpu_count": os.cpu_count(),
    }
    args.out.write_text(json.dumps(report, indent=1))
    print()
    print(markdown(service, baseline, ceiling))


if __name__ == "__main__":
    main()
