"""The container's entry point: load a release from its folder (release.json and artifacts/), verifying each
artifact's bytes against the manifest's SHA-256 and version before use; then --check reports and exits, and
--predict NODE INPUT.parquet OUTPUT.parquet scores a table with one of its models. Exit 1 on any mismatch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_release(folder: Path) -> tuple[dict, dict]:
    from depmesh.artifacts import unpack

    manifest = json.loads((folder / "release.json").read_text(encoding="utf-8"))
    models = {}
    for node, member in manifest["members"].items():
        payload = (folder / member["file"]).read_bytes()
        models[node] = unpack(payload, expected_sha=member["artifact_sha256"], expected_version=member["version"],
                              what=f"{node}@{member['version']}")
    return manifest, models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve_release", description=__doc__)
    parser.add_argument("release", type=Path)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--predict", nargs=3, metavar=("NODE", "INPUT", "OUTPUT"))
    args = parser.parse_args(argv)
    try:
        manifest, models = load_release(args.release)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the release is not served
        print(f"release not loaded: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"release {manifest['release']} of mesh {manifest['mesh']}: {len(models)} models loaded and verified: "
          + ", ".join(f"{n}@{m['version']}" for n, m in sorted(manifest["members"].items())))
    if args.predict:
        import pandas as pd

        node, source, target = args.predict
        if node not in models:
            print(f"no model {node} in this release ({', '.join(sorted(models))})", file=sys.stderr)
            return 2
        frame = pd.read_parquet(source)
        pd.DataFrame({"prediction": models[node].predict(frame)}).to_parquet(target)
        print(f"{len(frame)} predictions written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
