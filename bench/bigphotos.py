"""Big legal photos at once: does the server's memory stay bounded, and come back afterwards?

    python -m bench.bigphotos                      # 16 concurrent 30-36 MP PNG, WebP, JPEG uploads
    python -m bench.bigphotos --clients 32 --rounds 2
    MALLOC_ARENA_MAX=16 python -m bench.bigphotos  # glibc's default arenas, to compare
    python -m bench.bigphotos --command gunicorn application:app

Starts the server (the Procfile's web command unless --command) on 127.0.0.1 with the shipped
model, builds one 30-36-megapixel photo per format in memory (under the 40 MP limit, 0.1-1 MB
each), sends ``--clients`` uploads at once, ``--rounds`` times, then reports statuses, the
server's peak resident memory (VmHWM; the largest of the process and its children), its
resident memory when warm, right after the burst and ``--settle`` seconds later, and whether a
normal leaf upload still gets its diagnosis. Environment variables pass through to the server
(PLANTNET_DECODE_BUDGET_MB, MALLOC_ARENA_MAX, ...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tests.slowclients import big_photo, memory_mb, upload
from tests.support import SHIPPED_MODEL, Server, model_env, sample_bytes

FORMATS = (("PNG", 36.0), ("WEBP", 33.0), ("JPEG", 30.0))
MAX_CLIENTS = 64


def burst(url: str, photos: list[tuple[str, bytes]], clients: int) -> list[tuple[int, float]]:
    jobs = [photos[i % len(photos)] for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda job: upload(url, job[1], f"big.{job[0].lower()}", timeout=120), jobs))
    return [(a.status, a.seconds) for a in answers]


def measure(url: str, pid: int, clients: int, rounds: int, settle: float) -> dict:
    leaf = sample_bytes("tomato_healthy.jpg")
    photos = [(fmt, big_photo(fmt, megapixels, seed)) for seed, (fmt, megapixels) in enumerate(FORMATS)]
    for _ in range(3):
        upload(url, leaf)
    warm = memory_mb(pid)
    began = time.monotonic()
    answers = [answer for _ in range(rounds) for answer in burst(url, photos, clients)]
    seconds = time.monotonic() - began
    right_after = memory_mb(pid)
    time.sleep(settle)
    settled = memory_mb(pid)
    after = upload(url, leaf)
    statuses: dict[str, int] = {}
    for status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "uploads": len(answers),
        "clients": clients,
        "photos": {fmt: f"{len(data) / 1e6:.2f} MB" for fmt, data in photos},
        "statuses": statuses,
        "seconds": round(seconds, 1),
        "slowest_s": round(max(s for _, s in answers), 1),
        "warm_rss_mb": round(warm["rss"]),
        "peak_rss_mb": round(right_after["hwm"]),
        "rss_after_burst_mb": round(right_after["rss"]),
        f"rss_after_{settle:.0f}s_mb": round(settled["rss"]),
        "settled_vs_warm": f"{(settled['rss'] / warm['rss'] - 1) * 100:+.1f}%",
        "leaf_upload_after": after.status,
        "leaf_label_after": json.loads(after.body).get("label") if after.status == 200 else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help=f"uploads at once (at most {MAX_CLIENTS})")
    parser.add_argument("--rounds", type=int, default=1, help="bursts, one after another (at most 5)")
    parser.add_argument("--settle", type=float, default=30, help="seconds to wait before the last RSS reading")
    parser.add_argument("--model", default=str(SHIPPED_MODEL), help="model directory")
    parser.add_argument("--command", nargs=argparse.REMAINDER, help="server command (default: Procfile web)")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.rounds <= 5 or not 0 <= args.settle <= 120:
        parser.error(f"--clients 1..{MAX_CLIENTS}, --rounds 1..5, --settle 0..120")
    server = Server(model_env(args.model), command=args.command or None, output=subprocess.DEVNULL)
    try:
        server.wait_healthy(300)
        result = measure(server.url, server.process.pid, args.clients, args.rounds, args.settle)
    finally:
        status = server.stop()
    result["command"] = " ".join(args.command) if args.command else "Procfile web"
    result["exit_status"] = status
    print(json.dumps(result, indent=2))
    return 0 if result["leaf_upload_after"] == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
