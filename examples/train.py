"""Train a small cell-type classifier on a finished result through either loader; print held-out accuracy.

    python examples/train.py results/kidney-immune --route both --batch-size 256 --label cell_type

lamin:  the result's LaminDB Collection, `Collection.mapped()` in a PyTorch DataLoader
census: the same cells streamed from the Census SOMA store with tiledbsoma-ml

One cell in five (by a hash of its join key, the same on both routes) is held out: the classifier trains on
the others for --epochs passes, and the accuracy printed is on the held-out cells.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from cellquery.errors import one_line_exit
from cellquery.files.atomic import write_json
from cellquery.query.training import ROUTES, Result, connect_result, passes, train

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def main() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a finished run's results/<name>/ directory")
    parser.add_argument("--route", choices=[*ROUTES, "both"], default="both")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--label", default="cell_type", help="obs column to predict")
    parser.add_argument("--epochs", type=int, default=10, help="training passes before the held-out pass")
    parser.add_argument("--json", type=Path, help="also write every route's figures here")
    args = parser.parse_args()

    result = Result(args.results)
    ln = connect_result(result, config)
    classes = result.classes(args.label)
    figures = {}
    for route in ROUTES if args.route == "both" else [args.route]:
        stream = passes(route, result, args.label, args.batch_size, ln=ln)
        figures[route] = stats = train(stream, len(result.genes), classes, epochs=args.epochs)
        print(
            f"{route:<7} {stats['cells']:>9,} cells  {stats['steps']:>5} steps  loss {stats['loss']:.3f}  "
            f"held-out accuracy {stats['accuracy']:.3f} ({stats['held_out']:,} cells)  "
            f"{stats['cells_per_second']:>8,.0f} cells/s"
        )
    if args.json:
        write_json(args.json, figures)


if __name__ == "__main__":
    with one_line_exit():
        main()
