"""Synthetic catalogs with realistic fan-in and fan-out: datasets feed
feature tables, feature tables and earlier models feed models (models feeding
models, several layers deep), models feed scores, scores feed consumers.

    python3 -m uv run python benches/generate_mesh.py 1000 > /tmp/mesh1000.yaml
    python3 -m uv run python benches/generate_mesh.py 2000 --chain > /tmp/chain2000.yaml
"""

from __future__ import annotations

import argparse
import random
import sys

SPLIT = "{time_column: t, train_until: 2013-10-01, evaluate_until: 2013-12-01}"
OWNERS = [f"team:t{i}" for i in range(12)]
CRIT = ["low", "medium", "medium", "high", "critical"]


def generate(n: int, seed: int = 0) -> str:
    """About 10% datasets, 30% features, 30% models (in layers), 20% scores, 10% consumers."""
    rng = random.Random(seed)
    counts = {"dataset": max(1, n // 10), "features": max(1, n * 3 // 10), "model": max(1, n * 3 // 10),
              "scores": max(1, n // 5)}
    counts["consumer"] = max(1, n - sum(counts.values()))
    lines = [f"mesh: synthetic{n}", "nodes:"]
    made: dict[str, list[str]] = {k: [] for k in counts}

    def node(name: str, kind: str, inputs: list[str], build: str) -> None:
        ins = "[" + ", ".join(inputs) + "]"
        owner, crit = rng.choice(OWNERS), rng.choice(CRIT)
        body = f"compute: depmesh.examples.synthetic:{build}"
        if kind == "model":
            body = f"model: {{trainer: depmesh.examples.synthetic:train, target: value, seed: 1, split: {SPLIT}}}"
        lines.append(f"  - {{name: {name}, kind: {kind}, owner: {owner}, criticality: {crit}, inputs: {ins}, {body}}}")
        made[kind].append(name)

    for i in range(counts["dataset"]):
        node(f"raw/d{i}", "dataset", [], "source")
    for i in range(counts["features"]):
        node(f"features/f{i}", "features", rng.sample(made["dataset"], k=min(len(made["dataset"]), rng.randint(1, 3))), "combine")
    layers = max(2, min(8, counts["model"] // 10))
    per_layer = -(-counts["model"] // layers)
    for i in range(counts["model"]):
        layer = i // per_layer
        ins = rng.sample(made["features"], k=min(len(made["features"]), rng.randint(1, 3)))
        earlier = [m for m in made["model"] if int(m.split("_L")[1].split("_")[0]) < layer]
        if earlier:
            ins += rng.sample(earlier[-per_layer:], k=min(len(earlier[-per_layer:]), rng.randint(1, 2)))
        node(f"models/m_L{layer}_{i}", "model", ins, "")
    for i in range(counts["scores"]):
        node(f"scores/s{i}", "scores", [rng.choice(made["model"]), rng.choice(made["features"])], "combine")
    for i in range(counts["consumer"]):
        node(f"consumers/c{i}", "consumer", rng.sample(made["scores"], k=min(len(made["scores"]), rng.randint(1, 4))), "combine")
    return "\n".join(lines) + "\n"


def chain(n: int) -> str:
    lines = ["mesh: chain", "nodes:", "  - {name: raw/n0, kind: dataset, owner: team:a, compute: depmesh.examples.synthetic:source}"]
    lines += [f"  - {{name: features/n{i}, kind: features, owner: team:a, inputs: [{'raw' if i == 1 else 'features'}/n{i - 1}], "
              "compute: depmesh.examples.synthetic:combine}" for i in range(1, n)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("nodes", type=int)
    parser.add_argument("--chain", action="store_true", help="a straight chain instead of a layered mesh")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.stdout.write(chain(args.nodes) if args.chain else generate(args.nodes, args.seed))
