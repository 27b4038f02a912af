"""Read a prepared-dataset directory: schema, vocabularies and memory-mapped column files per split."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from loopctr.data.prepare import FORMAT_VERSION, GROUP, LABEL
from loopctr.data.schema import Schema, schema_from_dict
from loopctr.errors import UserError


class SplitData:
    """Column arrays of one split, memory-mapped on first use (a dataset larger than RAM works)."""

    def __init__(self, directory: Path, schema: Schema, rows: int):
        self.directory = directory
        self.schema = schema
        self.rows = rows
        self._columns: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            path = self.directory / f"{name}.npy"
            if not path.is_file():
                raise UserError(f"{path}: missing from the prepared dataset; run `loopctr prepare` again")
            self._columns[name] = np.load(path, mmap_mode="r")
        return self._columns[name]

    @property
    def labels(self) -> np.ndarray:
        return self.column(LABEL)

    @property
    def groups(self) -> np.ndarray | None:
        return self.column(GROUP) if self.schema.group else None


class ArraySplit(SplitData):
    """Columns held in memory (rows encoded at serving time), with the same interface as a stored split."""

    def __init__(self, columns: dict[str, np.ndarray], schema: Schema):
        super().__init__(Path("<memory>"), schema, int(columns[LABEL].shape[0]))
        self._columns = columns


CONTENT = "content:"  # the dataset vectors of "content:<vocab>" are item content vectors, not an embedding table
CROSS = "cross:"  # "cross:<field>:<field>@<side>": a pair's cross-feature matrices (PairCrossFeatures.SIDES)


def cross_vector_name(pair: str, side: str) -> str:
    return f"{CROSS}{pair}@{side}"


def _vector_files(meta: dict) -> dict[str, dict]:
    """Name -> file info of a prepared dataset's vectors: pretrained tables by vocabulary, content vectors as
    "content:<vocab>", cross-feature matrices (`loopctr pretrain-cross`) by pair and side (one mapping, so that
    every path that builds a model carries them all)."""
    cross = {cross_vector_name(pair, side): {"file": file, "dim": info["dim"]}
             for pair, info in meta.get("cross", {}).items() for side, file in info["files"].items()}
    return {**meta.get("pretrained", {}), **{CONTENT + name: info for name, info in meta.get("content", {}).items()},
            **cross}


def pretrained_dims(meta: dict) -> dict[str, int]:
    """Name (`_vector_files`) -> vector size, from the metadata (schema.json) of a prepared dataset or a run."""
    return {name: int(info["dim"]) for name, info in _vector_files(meta).items()}


class PreparedDataset:
    def __init__(self, path):
        self.path = Path(path)
        meta_path = self.path / "schema.json"
        if not meta_path.is_file():
            raise UserError(f"{self.path}: not a prepared dataset (no schema.json); run `loopctr prepare` first")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{self.path}: prepared with another loopctr format; run `loopctr prepare --overwrite`")
        self.schema: Schema = schema_from_dict(self.meta["schema"], where=str(meta_path))
        self.vocab_sizes: dict[str, int] = self.meta["vocab_sizes"]
        self.fingerprint: str = self.meta["fingerprint"]
        self._check_files()

    def _check_files(self):
        names = [LABEL] + ([GROUP] if self.schema.group else [])
        for f in self.schema.fields:
            names += [f.name, f.name + ".offsets"] if f.type == "sequence" else [f.name]
        for split in self.meta["splits"]:
            for name in names:
                if not (self.path / split / f"{name}.npy").is_file():
                    raise UserError(f"{self.path / split / name}.npy: missing from the prepared dataset; "
                                    "run `loopctr prepare --overwrite` again")

    @property
    def split_names(self) -> list[str]:
        return list(self.meta["splits"])

    def split(self, name: str) -> SplitData:
        if name not in self.meta["splits"]:
            raise UserError(f"{self.path}: no split '{name}' (has {self.split_names})")
        return SplitData(self.path / name, self.schema, self.meta["splits"][name]["rows"])

    @property
    def pretrained_dims(self) -> dict[str, int]:
        """Vocabulary -> size of its pretrained vectors (e.g. KuaiVideo_x1's visual item embeddings)."""
        return pretrained_dims(self.meta)

    def pretrained_vectors(self) -> dict[str, np.ndarray]:
        """Name (pretrained: the vocabulary; content: "content:<vocab>"; cross features: `cross_vector_name`) ->
        its vectors, row i for id i (rows 0 and 1 of pretrained and content vectors, padding and OOV, are zeros)."""
        return {name: np.load(self.path / info["file"]) for name, info in _vector_files(self.meta).items()}

    def token_counts(self, vocabulary: str, split: str = "train") -> np.ndarray:
        """(vocab size,) how often each id of `vocabulary` occurs in `split`, over every field that shares it
        (target fields and the events of histories)."""
        data, size = self.split(split), self.vocab_sizes[vocabulary]
        counts = np.zeros(size, dtype=np.int64)
        for f in self.schema.fields:
            if f.type != "numeric" and f.vocab == vocabulary:
                counts += np.bincount(np.asarray(data.column(f.name)), minlength=size)[:size]
        return counts

    def raw_rows(self, split: str, n: int) -> list[dict]:
        """The first n rows of a split as raw values (ids back to their tokens, padding and OOV as "never-seen";
        numeric values un-normalised), as a scoring request would send them."""
        from loopctr.data.prepare import denormalize_numeric

        if self.schema.hashed_vocabularies:
            raise UserError(f"{self.path}: hashed vocabularies {self.schema.hashed_vocabularies} keep no tokens to "
                            "turn ids back into")
        data, vocabs = self.split(split), self.vocabularies
        token = lambda vocab, i: vocabs[vocab][i - 2] if i >= 2 else "never-seen"  # noqa: E731
        columns = {f.name: np.asarray(data.column(f.name)) for f in self.schema.fields}
        offsets = {f.name: data.column(f.name + ".offsets") for f in self.schema.of_type("sequence")}
        raw = {f.name: denormalize_numeric(columns[f.name][:n].astype(np.float64), f.normalize,
                                           self.meta.get("numeric_stats", {}).get(f.name))
               for f in self.schema.of_type("numeric")}
        rows = []
        for r in range(n):
            row = {}
            for f in self.schema.fields:
                if f.type == "sequence":
                    events = columns[f.name][offsets[f.name][r]:offsets[f.name][r + 1]]
                    row[f.name] = f.separator.join(token(f.vocab, int(i)) for i in events)
                elif f.type == "numeric":
                    row[f.name] = float(raw[f.name][r])
                else:
                    row[f.name] = token(f.vocab, int(columns[f.name][r]))
            rows.append(row)
        return rows

    @cached_property
    def vocabularies(self) -> dict[str, list[str]]:
        return {name: json.loads((self.path / "vocab" / f"{name}.json").read_text()) for name in self.vocab_sizes
                if name not in self.schema.hashed_vocabularies}
