"""This service against the frameworks people would pick instead, around the same model and engine.

    python -m bench.peers                          # LitServe, BentoML, this service; ~4 minutes
    python -m bench.peers --peers litserve --duration 5

Starts each server on 127.0.0.1 one after the other (bench/peer_litserve.py, bench/peer_bentoml.py,
then the Procfile's ``python -m util.server``), and drives each with the same closed loop as
bench/serve.py: 8 lab photos of sample_images/ round-robin at 1, 4 and 16 clients, the 12 MP photo
at 4 clients. Records images/s, latency percentiles and RSS (the whole process tree: LitServe and
BentoML run several processes) idle after warm-up and after the load, then the engine's own
ceiling (bench/ceiling.py). Prints a Markdown table with the ratios and the issue's targets, and
writes the numbers to bench/peers-<cpu>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from bench.serve import drive, engine_ceiling
from tests.support import BIG_PHOTO, PREDICT, ROOT, Server, leaf_samples, procfile_web_command

LEAVES = 8  # lab photos, round-robin
SETTLE_S = 2.0  # after warm-up or load, before RSS is read: let the servers go idle


@dataclass(frozen=True)
class Contender:
    name: str
    command: list[str]
    path: str  # where a photo is POSTed, in the multipart field "image"
    health: str  # answers 200 once the model is loaded


CONTENDERS = {
    "litserve": Contender("LitServe", ["python", "-m", "bench.peer_litserve"], "/predict", "/health"),
    "bentoml": Contender("BentoML", ["python", "-m", "bench.peer_bentoml"], "/predict", "/readyz"),
    "service": Contender("PlantNet API", procfile_web_command(), PREDICT, "/health/ready"),
}


class PeerServer(Server):
    """tests.support.Server with the contender's health path, the whole process tree's RSS, and a
    checkout of its own (``root``: e.g. an older commit's files, to measure before and after)."""

    def __init__(self, contender: Contender, env: dict[str, str], root: Path = ROOT):
        self.contender = contender
        super().__init__(env, contender.command, subprocess.DEVNULL, root, contender.health, contender.name)

    def tree_rss_mb(self) -> float:
        """Resident memory of the server and every process it started, added up."""
        try:
            root = psutil.Process(self.process.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total / 2**20

    def stop(self, timeout: float = 60) -> int:
        children = psutil.Process(self.process.pid).children(recursive=True) if self.process.poll() is None else []
        status = super().stop(timeout)
        for child in children:  # a framework that leaves a worker behind must not skew the next contender
            try:
                child.wait(10)
            except psutil.TimeoutExpired:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        return status


def measure(contender: Contender, env: dict[str, str], clients: list[int], duration: float, root: Path = ROOT) -> dict:
    """Start one contender, warm it, read its idle RSS, run every load, read RSS again, stop it.

    Every request has its own multipart boundary, as curl, browsers and requests send them.
    """
    load_before = os.getloadavg()[0]
    server = PeerServer(contender, env, root)
    try:
        ready_s = server.wait_healthy(300)
        leaves = leaf_samples()[:LEAVES]

        def load(photos: list[tuple[str, bytes]], count: int, seconds: float) -> dict:
            return asdict(drive(server.url, photos, count, seconds, contender.path, fresh_boundaries=True))

        load(leaves, max(clients), min(3.0, duration))  # warm-up, not reported
        time.sleep(SETTLE_S)
        idle_rss = server.tree_rss_mb()
        loads = {f"leaf_c{c}": load(leaves, c, duration) for c in clients}
        loads["photo_c4"] = load([(BIG_PHOTO.name, BIG_PHOTO.read_bytes())], 4, duration)
        peak_rss = server.tree_rss_mb()
        time.sleep(SETTLE_S)
        return {
            "name": contender.name,
            "ready_s": round(ready_s, 1),
            "idle_rss_mb": round(idle_rss, 0),
            "rss_mb_after_load": round(server.tree_rss_mb(), 0),
            "rss_mb_under_load": round(peak_rss, 0),
            "processes": 1 + len(psutil.Process(server.process.pid).children(recursive=True)),
            # the 1-minute load average before it started and after its loads: near the contender's own
            # load (2 to 3 here) on a quiet machine, well above it when something else runs
            "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "loads": loads,
        }
    finally:
        server.stop()


def cpu_name() -> str:
    """The CPU's model name, from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_slug(name: str, engine: str) -> str:
    """A file-name part: the CPU's maker and the engine precision, e.g. ``xeon-bf16``."""
    words = re.sub(r"\(.*?\)", "", name).lower().split()
    maker = next((w for w in words if w in ("xeon", "epyc", "ryzen", "core", "neoverse")), words[0] if words else "cpu")
    return f"{maker}-{engine.split('/')[-1]}"


def ratios(mine: dict, peer: dict) -> dict[str, float]:
    """Throughput and p50 ratios per load; > 1 means this service is ahead."""
    out = {}
    for key, load in mine["loads"].items():
        theirs = peer["loads"].get(key)
        if theirs and theirs["images_per_s"] > 0:
            out[f"{key}_throughput"] = round(load["images_per_s"] / theirs["images_per_s"], 2)
            out[f"{key}_p50"] = round(theirs["p50_ms"] / max(load["p50_ms"], 1e-9), 2)
    return out


def targets(service: dict, litserve: dict | None, ceiling: dict) -> list[tuple[str, str, bool | None]]:
    """The issue's targets: (what, measured, held); None when a peer needed for it was not run."""
    loads = service["loads"]
    top = ceiling["ceiling_images_per_s"]
    batch_one_ms = ceiling["batches"]["1"]["ms_per_batch"]
    rows: list[tuple[str, str, bool | None]] = []

    def versus(key: str) -> tuple[str, bool | None]:
        if not litserve:
            return "LitServe not run", None
        ratio = loads[key]["images_per_s"] / litserve["loads"][key]["images_per_s"]
        return f"{ratio:.2f}x", ratio >= 1.0

    if "leaf_c16" in loads:  # a load left out by --clients has no rows
        rows.append(("16 clients: >= 1.0x LitServe", *versus("leaf_c16")))
        share = loads["leaf_c16"]["images_per_s"] / top
        ceiling_row = ("16 clients: >= 85% of the engine ceiling", f"{100 * share:.0f}% of {top:.0f} img/s")
        rows.append((*ceiling_row, share >= 0.85))
    if "leaf_c1" in loads:
        rows.append(("1 client: >= 1.0x LitServe", *versus("leaf_c1")))
        p50 = loads["leaf_c1"]["p50_ms"]
        latency = f"{p50:.1f} ms vs {batch_one_ms:.1f} + 10 ms"
        rows.append(("1 client: p50 <= engine batch-1 time + 10 ms", latency, p50 <= batch_one_ms + 10))
    rows.append(("12 MP photo, 4 clients: ahead of LitServe", *versus("photo_c4")))
    rows.append(("idle RSS <= 600 MB", f"{service['idle_rss_mb']:.0f} MB", service["idle_rss_mb"] <= 600))
    return rows


def markdown(report: dict) -> str:
    results, ceiling = report["results"], report["engine"]
    names = list(results)
    header = "| load | " + " | ".join(f"{results[n]['name']} img/s (p50 / p99 ms)" for n in names) + " |"
    lines = [header, "|---|" + "---:|" * len(names)]
    for key in results[names[0]]["loads"]:
        cells = []
        for n in names:
            load = results[n]["loads"].get(key)
            errors = f", {load['errors']} errors" if load and load["errors"] else ""
            cells.append(
                f"{load['images_per_s']:.1f} ({load['p50_ms']:.0f} / {load['p99_ms']:.0f}{errors})" if load else ""
            )
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append(
        "| idle RSS, MB (processes) | "
        + " | ".join(f"{results[n]['idle_rss_mb']:.0f} ({results[n]['processes']})" for n in names)
        + " |"
    )
    service = results.get("service")
    if service:
        peers = [n for n in names if n != "service"]
        lines += [
            "",
            "| load | " + " | ".join(f"vs {results[n]['name']}" for n in peers) + " | of the engine ceiling |",
        ]
        lines.append("|---|" + "---:|" * (len(peers) + 1))
        for key, load in service["loads"].items():
            cells = [f"{report['ratios'][n].get(key + '_throughput', float('nan')):.2f}x" for n in peers]
            share = (
                ""
                if key.startswith("photo")
                else f"{100 * load['images_per_s'] / ceiling['ceiling_images_per_s']:.0f}%"
            )
            lines.append(f"| {key} | " + " | ".join(cells) + f" | {share} |")
        lines += ["", "| target | measured | |", "|---|---:|---|"]
        for what, measured, held in targets(service, results.get("litserve"), ceiling):
            lines.append(f"| {what} | {measured} | {'n/a' if held is None else 'PASS' if held else 'FAIL'} |")
    batches = ", ".join(
        f"bs{b}: {v['images_per_s']:.0f} img/s ({v['ms_per_batch']:.1f} ms)" for b, v in ceiling["batches"].items()
    )
    lines += ["", f"Engine {ceiling['engine']} at {ceiling['input_size']} px on {report['cpu']}: {batches}."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=ROOT / "plantnet")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load level")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--peers", default="litserve,bentoml,service", help="which to run, in this order")
    p.add_argument(
        "--before",
        type=Path,
        help="also run the service from this checkout (e.g. git archive of an older commit), named 'before'",
    )
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for every contender, repeatable")
    p.add_argument("--out", type=Path, help="default bench/peers-<cpu>.json")
    p.add_argument("--note", default="", help="recorded in the JSON, e.g. 'under load'")
    args = p.parse_args()
    env = {
        "PLANTNET_MODEL_DIR": str(args.model_dir.resolve()),
        "BENTOML_DO_NOT_TRACK": "true",
        **dict(pair.split("=", 1) for pair in args.env),
    }
    clients = [int(c) for c in args.clients.split(",")]
    results = {}
    for key in args.peers.split(","):
        results[key] = measure(CONTENDERS[key], env, clients, args.duration)
        print(key, json.dumps(results[key]), flush=True)
    if args.before:
        before = Contender("PlantNet API before", CONTENDERS["service"].command, PREDICT, "/health")
        results["before"] = measure(before, env, clients, args.duration, args.before.resolve())
        print("before", json.dumps(results["before"]), flush=True)
    ceiling = engine_ceiling(args.model_dir, env)
    cpu = cpu_name()
    report = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "engine": ceiling,
        "duration_s": args.duration,
        "leaf_photos": LEAVES,
        "note": args.note,
        "results": results,
        "ratios": {
            k: ratios(results["service"], v) for k, v in results.items() if k != "service" and "service" in results
        },
    }
    out = args.out or ROOT / "bench" / f"peers-{cpu_slug(cpu, ceiling['engine'])}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print()
    print(markdown(report))
    print(f"\n(written to {out})")


if __name__ == "__main__":
    main()
