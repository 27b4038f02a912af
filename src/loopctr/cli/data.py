"""`loopctr data list|info|download`: the dataset catalogue on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from loopctr.cli.table import text_table
from loopctr.errors import UserError


def cmd_list(args):
    from loopctr.data import catalog

    rows = []
    for name in catalog.names():
        e = catalog.entry(name)
        rows.append({"name": name, "layout": e.layout, "size": e.about.get("size", ""),
                     "licence": e.about.get("licence", ""),
                     "download": "yes" if e.download.get("files") else "no"})
    print(text_table(rows, ["name", "layout", "download", "size", "licence"]))
    print("\n`loopctr data info NAME` shows an entry's source, protocol, options and defaults.")


def _percentiles(lengths: np.ndarray) -> str:
    if lengths.size == 0:
        return "-"
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    return f"{p50:.0f}/{p90:.0f}/{p99:.0f}/{lengths.max()}"


def prepared_info(path: Path) -> list[dict]:
    """Per split: rows, users (distinct groups), items, CTR and sequence-length percentiles p50/p90/p99/max."""
    from loopctr.data.dataset import PreparedDataset

    ds = PreparedDataset(path)
    targets = ds.schema.sequence_targets()
    item_field = targets[0][0] if targets else next((f.name for f in ds.schema.of_type("categorical")), None)
    rows = []
    for split in ds.split_names:
        data = ds.split(split)
        labels = np.asarray(data.labels)
        row = {"split": split, "rows": int(data.rows), "ctr": float(labels.mean()) if labels.size else 0.0}
        if ds.schema.group:
            row["users"] = int(np.unique(np.asarray(data.groups)).shape[0])
        if item_field:
            row["items"] = int(np.unique(np.asarray(data.column(item_field))).shape[0])
        for f in ds.schema.of_type("sequence"):
            row[f"{f.name} len p50/p90/p99/max"] = _percentiles(np.diff(np.asarray(data.column(f.name + ".offsets"))))
        rows.append(row)
    return rows


def cmd_info(args):
    from loopctr.data import catalog

    target = Path(args.name)
    if (target / "schema.json").is_file():
        meta = json.loads((target / "schema.json").read_text())
        rows = prepared_info(target)
        columns = ["split", "rows", "users", "items", "ctr"] + [k for k in rows[0] if k.endswith("max")]
        print(text_table(rows, [c for c in columns if c in rows[0]]))
        print(f"vocabularies: {meta['vocab_sizes']}")
        source = meta.get("source", {})
        if source:
            print(f"source: {source.get('dataset', '?')} (layout {source.get('layout', '?')})"
                  + (f" from {source['dir']}" if "dir" in source else ""))
        if meta.get("protocol", {}).get("valid_is_test"):
            print("protocol: BARS - the test split doubles as validation (models were selected on test)")
        if meta.get("pretrained"):
            print(f"pretrained vectors: {meta['pretrained']}")
        if meta.get("content"):
            print(f"content vectors: {meta['content']}")
        if meta.get("defaults"):
            print("training defaults: " + " ".join(f"{k}={v}" for k, v in meta["defaults"].items()))
        print(f"prepared in {meta.get('prepare_seconds', '?')} s")
        from loopctr.data.dataset import PreparedDataset
        from loopctr.data.leakage import leakage_report, leakage_warnings

        report = leakage_report(PreparedDataset(target))
        print("\nleakage checks: rows that repeat a training row in every feature; the share of positives and of "
              "negatives whose history ends with the target")
        print(text_table(report, list(max(report, key=len))))
        for line in leakage_warnings(report) or ["no sign of leakage"]:
            print(line)
        return
    if target.exists() and target.is_dir():
        raise UserError(f"{target}: not a prepared dataset (no schema.json) and not a catalogue name")
    from loopctr.data.sources import registry

    e = catalog.entry(args.name)
    print(f"{e.name}: {e.about.get('title', '')}")
    for key in ("source", "url", "licence", "size", "protocol"):
        if e.about.get(key):
            print(f"  {key}: {e.about[key]}")
    layout = registry.get(e.layout)
    print(f"  layout: {e.layout} - {layout.help}")
    options = registry.options_dict(registry.make_options(layout, e.options, [], e.name))
    if options:
        print("  source options (key=value after `loopctr prepare`): "
              + " ".join(f"{k}={v}" for k, v in options.items()))
    s = e.schema
    print(f"  label: {s.label}; group: {s.group}; min_count: {s.min_count}")
    for f in s.fields:
        extra = f", max_len {f.max_len}, shares {f.share_vocab or '-'}" if f.type == "sequence" else ""
        extra += f", shares {f.share_vocab}" if f.type == "categorical" and f.share_vocab else ""
        extra += f", min_count {f.min_count}" if f.min_count else ""
        extra += f", normalize {f.normalize}" if f.type == "numeric" else ""
        print(f"    {f.name}: {f.type}{extra}")
    if e.defaults:
        print("  training defaults: " + " ".join(f"{k}={v}" for k, v in e.defaults.items()))
    for spec in e.download.get("files") or []:
        print(f"  download: {spec['url']}")
    for fname, md5 in (e.download.get("md5") or {}).items():
        print(f"  md5 {fname}: {md5}")


def cmd_download(args):
    from loopctr.data.download import download_dataset

    out = Path(args.out) if args.out else Path("data") / args.name
    download_dataset(args.name, out, mirror=args.mirror, progress=not args.quiet)
    print(f"next: loopctr prepare --dataset {args.name} --source {out} --out prepared/{Path(args.name).stem}")


def add_data_commands(sub) -> None:
    """Register `data list`, `data info`, `data download` on the top-level subparsers."""
    p = sub.add_parser("data", help="the dataset catalogue: list, info, download")
    data = p.add_subparsers(dest="data_command", required=True)
    s = data.add_parser("list", help="catalogue entries with sizes, sources and licences")
    s.set_defaults(func=cmd_list)
    s = data.add_parser("info", help="a catalogue entry, or a prepared directory's rows/users/items/CTR/lengths")
    s.add_argument("name", help="catalogue name, schema .yaml, or prepared dataset directory")
    s.set_defaults(func=cmd_info)
    s = data.add_parser("download", help="download an entry's files (resumable, md5-verified)")
    s.add_argument("name", help="catalogue name (or a schema .yaml with a download section)")
    s.add_argument("--out", help="directory for the files (default: data/NAME)")
    s.add_argument("--mirror", help="base URL serving the same file names (replaces the entry's URLs)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_download)
