"""Built-in dataset schemas, by name. Each `<name>.yaml` beside this file is one entry."""

from __future__ import annotations

from pathlib import Path

from loopctr.data.schema import Schema, load_schema
from loopctr.errors import UserError

_HERE = Path(__file__).parent

# The embedded default dataset is generated, not read: it uses the AmazonElectronics_x1 schema.
SYNTHETIC = "synthetic"


def names() -> list[str]:
    return sorted([p.stem for p in _HERE.glob("*.yaml")] + [SYNTHETIC])


def resolve(name_or_path: str) -> Schema:
    """A built-in dataset name, or a path to a schema YAML."""
    if name_or_path == SYNTHETIC:
        return load_schema(_HERE / "amazon-electronics-x1.yaml")
    builtin = _HERE / f"{name_or_path}.yaml"
    if builtin.is_file():
        return load_schema(builtin)
    if Path(name_or_path).suffix in (".yaml", ".yml"):
        return load_schema(name_or_path)
    from difflib import get_close_matches

    close = get_close_matches(name_or_path, names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UserError(f"unknown dataset '{name_or_path}'{hint} (built-in: {', '.join(names())}; or a schema .yaml path)")
