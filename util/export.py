"""Convert the served model to OpenVINO IR ahead of time: ``python -m util.export``.

With no arguments it fills the cache the service reads (PLANTNET_MODEL_DIR,
PLANTNET_CACHE_DIR); ``python -m util.export MODEL_DIR OUT/model.xml`` converts one model
to one file. The service runs the latter in a child process on a cache miss, so the
serving process itself never imports TensorFlow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from util.config import Settings
from util.engine import openvino_ir, serving_function
from util.model_dir import ModelLoadError, find_artifact, load_keras_model


def export_openvino(model_dir: Path, ir_path: Path) -> Path:
    """Trace the Keras model with a free batch dimension and save it as OpenVINO IR (f32 weights)."""
    import openvino as ov

    model = load_keras_model(find_artifact(model_dir))
    function = serving_function(model, int(model.input_shape[1]))
    network = ov.convert_model(function.get_concrete_function())
    ir_path.parent.mkdir(parents=True, exist_ok=True)
    # Each process writes its own pair: replicas starting together on one cache volume each convert, and
    # the last rename wins with the same files instead of one moving the other's half-written .bin away.
    partial = ir_path.with_name(f"{ir_path.stem}.partial-{os.getpid()}.xml")
    try:
        ov.save_model(network, partial, compress_to_fp16=False)
        partial.with_suffix(".bin").replace(ir_path.with_suffix(".bin"))
        partial.replace(ir_path)  # the .xml last: its presence means the pair is complete
    finally:
        partial.unlink(missing_ok=True)
        partial.with_suffix(".bin").unlink(missing_ok=True)
    return ir_path


def main(argv: list[str]) -> int:
    if len(argv) not in (0, 2):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    try:
        if argv:
            export_openvino(Path(argv[0]), Path(argv[1]))
        else:
            settings = Settings.from_env()
            print(openvino_ir(find_artifact(settings.model_dir), settings.openvino_cache))
    except ModelLoadError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
