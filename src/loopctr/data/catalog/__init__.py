"""Built-in dataset entries, by name. Each `<name>.yaml` beside this file is one entry.

An entry is a schema (the strict format of `loopctr.data.schema`) plus catalogue-only sections that are
stripped before the Schema is built, so the schema stays strictly validated:

- `about`: title, source, licence, size, url (shown by `loopctr data list|info`);
- `source`: `layout` (the reader in `loopctr.data.sources.registry`) and its default `options`;
- `defaults`: the public protocol's training defaults as run-config keys (`model.embedding_dim`,
  `train.batch_size`, ...); recorded in the prepared dataset's schema.json;
- `download`: files with `name`, `url`, `md5` (and `archive: zip` when the download is an archive).

A user's own schema YAML may carry the same sections; without `source` it is read as CSV/parquet splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from loopctr.data.schema import Schema, schema_from_dict
from loopctr.config import load_yaml
from loopctr.errors import UserError

_HERE = Path(__file__).parent

# The embedded default dataset is generated, not read: it uses the AmazonElectronics_x1 schema.
SYNTHETIC = "synthetic"
CATALOGUE_SECTIONS = ("about", "source", "defaults", "download")
_SOURCE_KEYS = {"layout", "options"}
_ABOUT_KEYS = {"title", "source", "licence", "size", "url", "notes", "protocol"}


@dataclass(frozen=True)
class Entry:
    name: str
    schema: Schema
    layout: str = "csv"
    options: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    about: dict = field(default_factory=dict)
    download: dict = field(default_factory=dict)
    path: Path | None = None


def names() -> list[str]:
    return sorted([p.stem for p in _HERE.glob("*.yaml")] + [SYNTHETIC])


def entry_from_dict(raw: dict, where: str, path: Path | None = None) -> Entry:
    raw = dict(raw)
    sections = {k: raw.pop(k) for k in CATALOGUE_SECTIONS if k in raw}
    for key in ("about", "defaults", "download", "source"):
        if key in sections and not isinstance(sections[key], dict):
            raise UserError(f"{where}: '{key}' must be a mapping")
    source = sections.get("source", {})
    unknown = set(source) - _SOURCE_KEYS
    if unknown:
        raise UserError(f"{where}: source: unknown key(s) {sorted(unknown)}; valid keys: {sorted(_SOURCE_KEYS)}")
    unknown = set(sections.get("about", {})) - _ABOUT_KEYS
    if unknown:
        raise UserError(f"{where}: about: unknown key(s) {sorted(unknown)}; valid keys: {sorted(_ABOUT_KEYS)}")
    schema = schema_from_dict(raw, where=where)
    return Entry(
        name=schema.name,
        schema=schema,
        layout=source.get("layout", "csv"),
        options=dict(source.get("options") or {}),
        defaults=dict(sections.get("defaults", {})),
        about=dict(sections.get("about", {})),
        download=dict(sections.get("download", {})),
        path=path,
    )


def entry(name_or_path: str) -> Entry:
    """A built-in entry by name (or `synthetic`), or a schema YAML path (a user's own data)."""
    if name_or_path == SYNTHETIC:
        base = entry("amazon-electronics-x1")
        return Entry(name=SYNTHETIC, schema=base.schema, layout="synthetic", defaults=base.defaults,
                     about={"title": "generated DIN-protocol logs with planted structure (AmazonElectronics_x1 schema)",
                            "source": "loopctr.data.synthetic", "licence": "Apache-2.0 (generated)",
                            "size": "3000 users by default"})
    builtin = _HERE / f"{name_or_path}.yaml"
    if builtin.is_file():
        return entry_from_dict(load_yaml(builtin, "schema file"), str(builtin), builtin)
    if Path(name_or_path).suffix in (".yaml", ".yml"):
        path = Path(name_or_path)
        return entry_from_dict(load_yaml(path, "schema file"), str(path), path)
    from difflib import get_close_matches

    close = get_close_matches(name_or_path, names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UserError(f"unknown dataset '{name_or_path}'{hint} (built-in: {', '.join(names())}; or a schema .yaml path)")


def resolve(name_or_path: str) -> Schema:
    """A built-in dataset name, or a path to a schema YAML."""
    return entry(name_or_path).schema
