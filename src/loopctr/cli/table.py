"""Plain-text tables for the command line (shared by `loopctr.cli.main` and `loopctr.cli.data`)."""

from __future__ import annotations


def text_table(rows: list[dict], columns: list[str]) -> str:
    """`rows` as aligned columns under a header: the first column left-aligned, the others right-aligned;
    floats of 1000 and more without decimals, smaller ones with four, ints with thousands separators."""

    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])
