"""Average the weights of models fine-tuned from one start: a uniform "model soup" (Wortsman et al. 2022).

    python -m training.soup runs/model-s1/model.keras runs/model-s2/model.keras --out runs/soup.keras

Runs that share their starting weights (train.py --init-from) and differ only in --train-seed stay
in one basin of the loss, so the average of their weights is a model in its own right, usually a
little better than either. Its batch-norm statistics are stale: finish it with
``train.py --finish-from runs/soup.keras`` (recalibration, evaluation, calibration, card).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from util.model_dir import EVALUATION_FILE, read_metadata

log = logging.getLogger("soup")


def weighted_average(models: Sequence, shares: Sequence[float]) -> list[np.ndarray]:
    """Each weight of ``models`` (one architecture) averaged with ``shares`` (summing to 1)."""
    if len(models) != len(shares) or not np.isclose(sum(shares), 1.0):
        raise ValueError("one share per model, summing to 1")
    per_model = [m.get_weights() for m in models]
    return [sum(s * w for s, w in zip(shares, ws, strict=True)) for ws in zip(*per_model, strict=True)]


def recipe_file(weights: Path) -> Path:
    """Where a soup's list of ingredients is kept: beside its weights, for the model card."""
    return weights.with_suffix(".json")


def ingredient(path: Path) -> dict:
    """One model of a soup and, when its model directory has them, its measured numbers."""
    evaluation = path.parent / EVALUATION_FILE
    facts = json.loads(evaluation.read_text()) if evaluation.exists() else {}
    return {
        "model": str(path),
        "top1": facts.get("top1"),
        "field_proxy": facts.get("field_proxy", {}).get("top1"),
        "training": read_metadata(path.parent).get("training"),
    }


def make_soup(paths: Sequence[Path], out: Path):
    """Load the .keras models at ``paths``, average their weights uniformly, save the result at ``out``."""
    import keras

    models = [keras.saving.load_model(p, compile=False) for p in paths]
    soup = keras.models.clone_model(models[0])
    soup.set_weights(weighted_average(models, [1.0 / len(models)] * len(models)))
    out.parent.mkdir(parents=True, exist_ok=True)
    soup.save(out)
    recipe_file(out).write_text(json.dumps({"uniform_soup_of": [ingredient(p) for p in paths]}, indent=1))
    log.info("averaged %d models into %s", len(models), out)
    return soup


def describe(weights: Path) -> str:
    """Where ``weights`` came from, for the card: its ingredients, their numbers and how each was trained
    ('' when nothing is recorded)."""
    recipe = recipe_file(weights)
    if not recipe.exists():
        return ""
    recorded = json.loads(recipe.read_text())
    parts = recorded.get("uniform_soup_of")
    if not parts:  # a model directory's model.json: say how its weights were trained, if it says
        training = recorded.get("training")
        made = f"; {_numbers({'training': training})}" if training else ""
        return f"the weights of the model directory `{weights.parent}` (version {recorded.get('version')}){made}"
    listed = "\n".join(f"- `{p['model']}`" + (f": {numbers}" if (numbers := _numbers(p)) else "") for p in parts)
    return f"the uniform average of the weights of {len(parts)} models (a model soup):\n\n{listed}"


def _numbers(part: dict) -> str:
    shown = [(name, part.get(key)) for key, name in (("top1", "validation top-1"), ("field_proxy", "field proxy"))]
    numbers = ", ".join(f"{name} {100 * value:.2f}%" for name, value in shown if value is not None)
    training = part.get("training")
    if not training:
        return numbers
    trained = (
        f"trained by `{training['command']}`, {training['epochs_run']} epochs in {training['minutes']:.0f} minutes"
    )
    return f"{numbers}; {trained}" if numbers else trained


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", type=Path, nargs="+", help=".keras models of one architecture and one start")
    p.add_argument("--out", type=Path, required=True, help=".keras file to write (and its recipe beside it, .json)")
    args = p.parse_args(argv)
    if len(args.models) < 2:
        p.error("a soup needs two or more models")
    make_soup(args.models, args.out)


if __name__ == "__main__":
    main()
