"""Dataset schemas: which columns are features (categorical, numeric, sequence), the label and the group.

A schema is declared in YAML and validated strictly: unknown keys, unknown field types and dangling
vocabulary references are errors. Fields that share a vocabulary share one embedding table
(e.g. `item_history` shares `item_id`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from loopctr.errors import UserError

# The two reserved ids of every vocabulary (`loopctr prepare` numbers a vocabulary's tokens from 2): PAD
# fills the padded positions of sequences and is no token's id; OOV is the id of every token the vocabulary
# does not hold.
PAD, OOV = 0, 1
HASH_BITS = 31  # the ids of a hashed vocabulary (`hashed: true`) are 31-bit token hashes, as int32 as any other id

FIELD_TYPES = ("categorical", "numeric", "sequence")
PADDING_SIDES = ("pre", "post")
NUMERIC_NORMALIZATIONS = ("none", "standard", "log1p")


def parse_pair(name: str, where: str = "model.cross_features") -> tuple[str, str]:
    """A pair of fields, 'user_id:item_id' -> ('user_id', 'item_id') (cross features, layers/cross_features.py)."""
    left, sep, right = name.partition(":")
    if not sep or not left or not right or ":" in right or left == right:
        raise UserError(f"{where}: '{name}' is not a pair of two fields; expected FIELD:FIELD (e.g. user_id:item_id)")
    return left, right


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    share_vocab: str | None = None  # name of the categorical field whose vocabulary (and embedding) this uses
    max_len: int = 0  # sequences: keep the most recent max_len events
    padding: str = "pre"  # sequences: padding on the left ("pre", most recent event last) or the right
    separator: str = "^"  # sequences: token separator in the source files
    min_count: int | None = None  # categorical/sequence: overrides the schema's min_count
    normalize: str = "none"  # numeric: statistics fitted on the train split
    # the field's vocabulary is hashed: no token list, each token's id is a stable 31-bit hash of it (prepare.py's
    # token_code), so tokens never seen in training keep ids of their own; embedded by binary-code hash tables
    hashed: bool = False
    # a numeric field that a model computes from two categorical fields' ids through their pre-trained cross
    # feature (layers/cross_features.py; `Schema.with_cross_features`), never read from data or requests
    cross: bool = False

    @property
    def vocab(self) -> str | None:
        """Name of the vocabulary (= embedding table) this field's ids index."""
        if self.type == "numeric":
            return None
        return self.share_vocab or self.name


@dataclass(frozen=True)
class Schema:
    name: str
    label: str
    fields: tuple[FieldSpec, ...]
    group: str | None = None  # column for gAUC (e.g. user_id); need not be a feature
    min_count: int = 1
    splits: dict = field(default_factory=lambda: {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"})
    delimiter: str = ","

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def of_type(self, kind: str) -> list[FieldSpec]:
        return [f for f in self.fields if f.type == kind]

    @property
    def hashed_vocabularies(self) -> list[str]:
        return [v for v in self.vocabularies if self.field(v).hashed]

    @property
    def vocabularies(self) -> list[str]:
        """Vocabulary names in field order, each once."""
        seen: list[str] = []
        for f in self.fields:
            if f.vocab is not None and f.vocab not in seen:
                seen.append(f.vocab)
        return seen

    def with_cross_features(self, pairs: list[str], where: str = "model.cross_features") -> Schema:
        """This schema and one numeric field per pair of categorical fields ("user_id:item_id"), its value the
        pair's pre-trained cross feature: how a model built with `model.cross_features` sees its inputs. Also
        the check of `loopctr pretrain-cross`'s pairs (`where` names the setting in errors)."""
        added = []
        for pair in pairs:
            for name in parse_pair(pair, where):
                if name not in self.field_names or self.field(name).type != "categorical":
                    raise UserError(f"{where}: '{name}' of '{pair}' is not a categorical field "
                                    f"({[f.name for f in self.of_type('categorical')]})")
                if self.field(name).hashed:
                    raise UserError(f"{where}: '{name}' is hashed; its 31-bit ids have no node table")
            added.append(FieldSpec(name=pair, type="numeric", cross=True))
        return dataclasses.replace(self, fields=self.fields + tuple(added)) if added else self

    def sequence_targets(self) -> list[tuple[str, str]]:
        """(target field, sequence field) pairs: a sequence field and the categorical field it shares a vocabulary
        with, e.g. (item_id, item_history). Target-attention models attend from the target over the sequence."""
        pairs = []
        for seq in self.of_type("sequence"):
            for cat in self.of_type("categorical"):
                if cat.vocab == seq.vocab:
                    pairs.append((cat.name, seq.name))
                    break
        return pairs

    def sequence_groups(self) -> list[list[str]]:
        """Sequence fields that describe the same events, each group one jagged tensor in a batch
        (`data.batch`): every sequence paired with a target field (`sequence_targets`: the behaviour history,
        e.g. item_history and cate_history) in one group, then each other sequence field (a bag such as a
        movie's genres) in a group of its own."""
        paired = [s for _, s in self.sequence_targets()]
        return ([paired] if paired else []) + [[f.name] for f in self.of_type("sequence") if f.name not in paired]

    def same_event_groups(self) -> list[list[str]]:
        """The sequence groups whose fields are attributes of the same events (item_history and cate_history),
        so every row holds as many events in each. A group with two fields of one vocabulary holds several
        event streams (KuaiVideo's clicked and skipped items), whose lengths may differ: the batch aligns them
        at their newest event."""
        return [g for g in self.sequence_groups() if len(g) > 1 and len({self.field(n).vocab for n in g}) == len(g)]

    def to_dict(self) -> dict:
        """The declared schema: a model's computed cross fields are not part of it."""
        raw = dataclasses.asdict(self)
        raw["fields"] = [{k: v for k, v in f.items() if k != "cross"} for f in raw["fields"] if not f["cross"]]
        return raw

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


_FIELD_KEYS = {f.name for f in dataclasses.fields(FieldSpec)} - {"cross"}
_SCHEMA_KEYS = {f.name for f in dataclasses.fields(Schema)}


def _unknown_key_error(where: str, key: str, valid) -> UserError:
    from difflib import get_close_matches

    close = get_close_matches(key, sorted(valid), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return UserError(f"{where}: unknown key '{key}'{hint}")


def schema_from_dict(raw: dict, where: str = "schema") -> Schema:
    """Build and validate a Schema from its YAML/JSON form."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping at the top level")
    for key in raw:
        if key not in _SCHEMA_KEYS:
            raise _unknown_key_error(where, key, _SCHEMA_KEYS)
    for required in ("name", "label", "fields"):
        if required not in raw:
            raise UserError(f"{where}: missing required key '{required}'")
    specs = []
    for i, entry in enumerate(raw["fields"]):
        if not isinstance(entry, dict) or "name" not in entry or "type" not in entry:
            raise UserError(f"{where}: fields[{i}] needs at least 'name' and 'type'")
        for key in entry:
            if key not in _FIELD_KEYS:
                raise _unknown_key_error(f"{where}: field '{entry['name']}'", key, _FIELD_KEYS)
        specs.append(FieldSpec(**entry))
    schema = Schema(**{**raw, "fields": tuple(specs), "splits": dict(raw.get("splits", Schema.__dataclass_fields__["splits"].default_factory()))})
    validate(schema, where)
    return schema


def validate(schema: Schema, where: str = "schema") -> None:
    names = schema.field_names
    if len(set(names)) != len(names):
        raise UserError(f"{where}: duplicate field names in {names}")
    if schema.label in names:
        raise UserError(f"{where}: the label '{schema.label}' is also declared as a feature")
    if not schema.fields:
        raise UserError(f"{where}: no feature fields declared")
    if "train" not in schema.splits:
        raise UserError(f"{where}: splits must include 'train' (vocabularies are fitted on it)")
    if schema.min_count < 1:
        raise UserError(f"{where}: min_count must be >= 1")
    by_name = {f.name: f for f in schema.fields}
    for f in schema.fields:
        if f.type not in FIELD_TYPES:
            raise UserError(f"{where}: field '{f.name}' has type '{f.type}'; expected one of {FIELD_TYPES}")
        if f.type == "sequence":
            if f.max_len < 1:
                raise UserError(f"{where}: sequence field '{f.name}' needs max_len >= 1")
            if f.padding not in PADDING_SIDES:
                raise UserError(f"{where}: field '{f.name}' padding must be one of {PADDING_SIDES}")
            if not f.separator or f.separator == schema.delimiter:
                raise UserError(f"{where}: field '{f.name}' separator must be non-empty and differ from the delimiter")
        if f.type == "numeric":
            if f.share_vocab is not None:
                raise UserError(f"{where}: numeric field '{f.name}' cannot share a vocabulary")
            if f.normalize not in NUMERIC_NORMALIZATIONS:
                raise UserError(f"{where}: field '{f.name}' normalize must be one of {NUMERIC_NORMALIZATIONS}")
        if f.hashed and (f.type == "numeric" or f.share_vocab is not None):
            raise UserError(f"{where}: field '{f.name}' cannot be hashed: 'hashed' belongs on the field that owns "
                            "a vocabulary (categorical or sequence, without share_vocab)")
        if f.share_vocab is not None:
            owner = by_name.get(f.share_vocab)
            if owner is None or owner.type == "numeric" or owner.share_vocab is not None:
                raise UserError(
                    f"{where}: field '{f.name}' shares the vocabulary of '{f.share_vocab}', "
                    "which must be a declared categorical or sequence field that owns its vocabulary"
                )
