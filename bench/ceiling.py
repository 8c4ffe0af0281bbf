"""The engine's own ceiling: ``python -m bench.ceiling MODEL_DIR [SECONDS]`` prints JSON.

Images/s of the bare backend (PLANTNET_BACKEND, PLANTNET_PRECISION...) on already
preprocessed random batches, per batch size; bench/serve.py runs it in a child process.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from util.config import Settings
from util.engine import Engine, create_engine
from util.model_dir import find_artifact

BATCH_SIZES = (1, 8, 16, 32)


def time_batches(engine: Engine, batch_size: int, seconds: float) -> dict:
    """Run one batch size repeatedly for ``seconds`` after a warm-up call."""
    size = engine.input_size
    batch = np.random.default_rng(0).uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32)
    engine.predict(batch)
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        engine.predict(batch)
        calls += 1
    took = time.perf_counter() - began
    return {"images_per_s": round(calls * batch_size / took, 1), "ms_per_batch": round(1000 * took / calls, 2)}


def main(argv: list[str]) -> None:
    settings = Settings.from_env(model_dir=argv[0])
    engine = create_engine(find_artifact(settings.model_dir), settings)
    seconds = float(argv[1]) if len(argv) > 1 else 3.0
    batches = {size: time_batches(engine, size, seconds) for size in BATCH_SIZES}
    print(
        json.dumps({"engine": f"{engine.name}/{engine.precision}", "input_size": engine.input_size, "batches": batches})
    )


if __name__ == "__main__":
    main(sys.argv[1:])
