"""Write constraints-gpu.txt: the exact versions the GPU install adds to constraints.txt (onnxruntime-gpu and the
CUDA and cuDNN wheels its extras bring), from a `pip install --dry-run --report` of ".[gpu]".

    python tools/pin_gpu.py build/gpu-report.json    # run by `make constraints`
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = [
    "# Exact versions the GPU install (make run on a GPU host, make bench-cuda, the gpu image) adds to",
    "# constraints.txt: onnxruntime-gpu and the CUDA and cuDNN wheels of its extras. Regenerate: make constraints.",
]


def key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(path: Path) -> set[str]:
    """The package names a constraints file pins."""
    lines = [line for line in path.read_text().splitlines() if "==" in line and not line.startswith("#")]
    return {key(line.split("==")[0]) for line in lines}


def gpu_pins(report: dict, already: set[str], project: str = "resmtnet-serve") -> list[str]:
    """name==version for every package the report installs that is neither pinned already nor the project."""
    found = {key(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}
    return sorted(f"{name}=={version}" for name, version in found.items() if name not in already | {project})


def main(argv: list[str]) -> None:
    report = json.loads(Path(argv[0]).read_text())
    pins = gpu_pins(report, pinned(REPO / "constraints.txt"))
    (REPO / "constraints-gpu.txt").write_text("\n".join([*HEADER, *pins]) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
