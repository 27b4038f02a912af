"""MovieLens as CTR: every rating is a sample, a rating >= `threshold` (4) is a click. Each user's ratings
are ordered by time; a sample's history is the user's earlier clicked movies (by default only those
strictly earlier in time: many ratings share a second), newest `max_history`. Features: user id, movie
id, the user's gender, age, occupation and zip ("unknown" where the layout has none), the movie's genres.

Layouts (found by file name in the source directory):
- `100k` (RecBole atomic files, as in ../shared/data/movielens_100k): `*.inter` (tab-separated
  `user_id:token item_id:token rating:float timestamp:float` header), `*.user`, `*.item`;
- `100k-raw` (GroupLens ml-100k): `u.data` (tab: user item rating time), `u.user` (`id|age|gender|occupation|zip`),
  `u.item` (`id|title|date|video|url|` 19 genre flags), `u.genre`;
- `latest` (GroupLens ml-latest(-small)): `ratings.csv` (userId,movieId,rating,timestamp), `movies.csv`;
- `1m` (GroupLens ml-1m): `ratings.dat` (`UserID::MovieID::Rating::Timestamp`), `users.dat`
  (`UserID::Gender::Age::Occupation::Zip-code`), `movies.dat` (`MovieID::Title::Genres`, genres `|`-joined);
- `merged`: one CSV with a header naming user_id, movie_id, rating, timestamp, genres, gender, age,
  occupation, zip (one row per rating, e.g. DeepCTR's MovieLens-1M sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from loopctr.data.din_protocol import user_positions, window_indices
from loopctr.data.sources.registry import Layout, ReadContext, SourceResult, register
from loopctr.errors import UserError, located

UNKNOWN = "unknown"
USER_FEATURES = ("gender", "age", "occupation", "zip")
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]


@dataclass
class MovieLensOptions:
    layout: Literal["auto", "100k", "100k-raw", "latest", "1m", "merged"] = "auto"
    file: str = ""  # merged: the CSV (default: the only *.csv / *.txt)
    threshold: float = 4.0  # a rating >= threshold is a click
    max_history: int = 50
    split: Literal["leave_last_out", "time"] = "leave_last_out"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    same_time_history: bool = False  # clicks on the same timestamp as the sample are not history

    def validate(self):
        if self.max_history < 1:
            raise UserError("max_history must be >= 1")
        if not (0 < self.valid_fraction < 1 and 0 < self.test_fraction < 1
                and self.valid_fraction + self.test_fraction < 1):
            raise UserError("valid_fraction and test_fraction must be in (0, 1) and sum to less than 1")


@dataclass
class Ratings:
    user: list
    item: list
    rating: np.ndarray
    time: np.ndarray
    users: dict  # user -> (gender, age, occupation, zip)
    genres: dict  # item -> [genre, ...]
    source: str


def _lines(path: Path, encoding: str = "utf-8"):
    text = path.read_bytes().decode(encoding, errors="replace")
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def _split(path: Path, number: int, line: str, sep: str, width: int, what: str) -> list[str]:
    parts = line.split(sep)
    if len(parts) < width:
        found = next((c for c in ("::", "\t", ",", "|") if c != sep and c in line), None)
        hint = f"; the line looks {found!r}-separated" if found else ""
        raise UserError(f"{located(path, number)}: expected {width} {sep!r}-separated fields ({what}), "
                        f"found {len(parts)}{hint}")
    return parts


def _number(path: Path, number: int, value: str, field: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise UserError(f"{located(path, number, field)}: '{value}' is not a number") from None
    if not np.isfinite(v):
        raise UserError(f"{located(path, number, field)}: '{value}' is not finite")
    return v


def _ratings(path: Path, sep: str, skip_header: bool, encoding: str = "utf-8") -> tuple[list, list, list, list]:
    users, items, ratings, times = [], [], [], []
    for number, line in _lines(path, encoding):
        if skip_header and number == 1:
            continue
        u, i, r, t = _split(path, number, line, sep, 4, "user, item, rating, timestamp")[:4]
        users.append(u)
        items.append(i)
        ratings.append(_number(path, number, r, "rating"))
        times.append(_number(path, number, t, "timestamp"))
    if not users:
        raise UserError(f"{located(path, 1)}: no ratings")
    return users, items, ratings, times


def _make(path, users, items, ratings, times, user_features, genres) -> Ratings:
    return Ratings(users, items, np.array(ratings), np.array(times), user_features, genres, str(path))


def read_100k(d: Path) -> Ratings:
    inter = next(iter(sorted(d.glob("*.inter"))))
    users, items, ratings, times = _ratings(inter, "\t", True)
    features, genres = {}, {}
    for path in sorted(d.glob("*.user"))[:1]:
        for number, line in _lines(path):
            if number == 1:
                continue
            u, age, gender, occupation, zip_code = _split(path, number, line, "\t", 5, "user_id age gender occupation zip_code")[:5]
            features[u] = (gender, age, occupation, zip_code)
    for path in sorted(d.glob("*.item"))[:1]:
        for number, line in _lines(path):
            if number == 1:
                continue
            parts = _split(path, number, line, "\t", 4, "item_id movie_title release_year class")
            genres[parts[0]] = parts[3].split()
    return _make(inter, users, items, ratings, times, features, genres)


def read_100k_raw(d: Path) -> Ratings:
    users, items, ratings, times = _ratings(d / "u.data", "\t", False)
    features, genres = {}, {}
    if (d / "u.user").is_file():
        for number, line in _lines(d / "u.user", "latin-1"):
            u, age, gender, occupation, zip_code = _split(d / "u.user", number, line, "|", 5, "id|age|gender|occupation|zip")[:5]
            features[u] = (gender, age, occupation, zip_code)
    if (d / "u.item").is_file():
        for number, line in _lines(d / "u.item", "latin-1"):
            parts = _split(d / "u.item", number, line, "|", 24, "id|title|date|video|url|19 genre flags")
            genres[parts[0]] = [g for g, flag in zip(GENRES_100K, parts[5:24]) if flag == "1"]
    return _make(d / "u.data", users, items, ratings, times, features, genres)


def read_latest(d: Path) -> Ratings:
    import csv

    users, items, ratings, times = _ratings(d / "ratings.csv", ",", True)
    genres = {}
    if (d / "movies.csv").is_file():
        with open(d / "movies.csv", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            if header[:1] != ["movieId"] or "genres" not in header:
                raise UserError(f"{located(d / 'movies.csv', 1)}: expected the header movieId,title,genres")
            at = header.index("genres")
            for row in reader:
                if len(row) != len(header):
                    raise UserError(f"{located(d / 'movies.csv', reader.line_num)}: expected {len(header)} columns")
                genres[row[0]] = [] if row[at] == "(no genres listed)" else row[at].split("|")
    return _make(d / "ratings.csv", users, items, ratings, times, {}, genres)


def read_1m(d: Path) -> Ratings:
    users, items, ratings, times = _ratings(d / "ratings.dat", "::", False, "latin-1")
    features, genres = {}, {}
    if (d / "users.dat").is_file():
        for number, line in _lines(d / "users.dat", "latin-1"):
            u, gender, age, occupation, zip_code = _split(d / "users.dat", number, line, "::", 5,
                                                          "UserID::Gender::Age::Occupation::Zip-code")[:5]
            features[u] = (gender, age, occupation, zip_code)
    if (d / "movies.dat").is_file():
        for number, line in _lines(d / "movies.dat", "latin-1"):
            parts = _split(d / "movies.dat", number, line, "::", 3, "MovieID::Title::Genres")
            genres[parts[0]] = parts[-1].split("|")
    return _make(d / "ratings.dat", users, items, ratings, times, features, genres)


def read_merged(path: Path) -> Ratings:
    import csv

    needed = ["user_id", "movie_id", "rating", "timestamp"]
    users, items, ratings, times, features, genres = [], [], [], [], {}, {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise UserError(f"{located(path, 1)}: the file is empty")
        missing = [c for c in needed if c not in header]
        if missing:
            raise UserError(f"{located(path, 1)}: missing column(s) {missing}; the header has {header}")
        col = {name: header.index(name) for name in header}
        for row in reader:
            line = reader.line_num
            if len(row) != len(header):
                raise UserError(f"{located(path, line)}: expected {len(header)} columns (as in the header), "
                                f"found {len(row)}")
            u, i = row[col["user_id"]], row[col["movie_id"]]
            users.append(u)
            items.append(i)
            ratings.append(_number(path, line, row[col["rating"]], "rating"))
            times.append(_number(path, line, row[col["timestamp"]], "timestamp"))
            features[u] = tuple(row[col[f]] if f in col else UNKNOWN for f in USER_FEATURES)
            if "genres" in col:
                genres[i] = row[col["genres"]].split("|")
    if not users:
        raise UserError(f"{located(path, 2)}: no rows")
    return _make(path, users, items, ratings, times, features, genres)


def detect(d: Path, o: MovieLensOptions) -> tuple[str, list[Path]]:
    d = Path(d)
    layout = o.layout
    if layout == "auto":
        if list(d.glob("*.inter")):
            layout = "100k"
        elif (d / "u.data").is_file():
            layout = "100k-raw"
        elif (d / "ratings.dat").is_file():
            layout = "1m"
        elif (d / "ratings.csv").is_file():
            layout = "latest"
        elif o.file or list(d.glob("*.csv")) or list(d.glob("*.txt")):
            layout = "merged"
        else:
            raise UserError(f"{d}: no MovieLens files (*.inter, u.data, ratings.dat, ratings.csv or a merged CSV)")
    if layout == "merged":
        if o.file:
            files = [d / o.file]
        else:
            files = sorted(list(d.glob("*.csv")) + list(d.glob("*.txt")))
            if len(files) != 1:
                raise UserError(f"{d}: name the merged CSV with file= (found {[p.name for p in files]})")
        if not files[0].is_file():
            raise UserError(f"{files[0]}: file not found (file=)")
        return layout, files
    names = {"100k": ["*.inter", "*.user", "*.item"], "100k-raw": ["u.data", "u.user", "u.item"],
             "latest": ["ratings.csv", "movies.csv"], "1m": ["ratings.dat", "users.dat", "movies.dat"]}[layout]
    if not list(d.glob(names[0])):
        raise UserError(f"{d}: {names[0]} not found (the ratings of the '{layout}' layout)")
    return layout, [p for pattern in names for p in sorted(d.glob(pattern))]


def build_samples(r: Ratings, o: MovieLensOptions) -> dict[str, pa.Table]:
    enc_u = pa.array(r.user, pa.string()).dictionary_encode()
    enc_i = pa.array(r.item, pa.string()).dictionary_encode()
    user = enc_u.indices.to_numpy().astype(np.int64)
    item = enc_i.indices.to_numpy().astype(np.int64)
    order = np.lexsort((np.arange(user.shape[0]), r.time, user))
    user, item, rating, t = user[order], item[order], r.rating[order], r.time[order]
    click = rating >= o.threshold
    start, pos, count = user_positions(user)
    n = user.shape[0]
    if o.same_time_history:
        end = np.arange(n)
    else:
        boundary = np.r_[True, (user[1:] != user[:-1]) | (t[1:] != t[:-1])]
        end = np.maximum.accumulate(np.where(boundary, np.arange(n), 0))
    clicks_before = np.r_[0, np.cumsum(click)]  # clicks among events [0, i)
    clicked = np.flatnonzero(click)
    h_end = clicks_before[end]
    h_begin = np.maximum(clicks_before[start], h_end - o.max_history)

    if o.split == "leave_last_out":
        where = np.where(pos == count - 1, 2, np.where(pos == count - 2, 1, 0))
    else:
        ordered = np.sort(t)
        t_test = ordered[min(int(n * (1 - o.test_fraction)), n - 1)]
        t_valid = ordered[min(int(n * (1 - o.test_fraction - o.valid_fraction)), n - 1)]
        where = np.where(t >= t_test, 2, np.where(t >= t_valid, 1, 0))

    user_tokens, item_tokens = enc_u.dictionary, enc_i.dictionary
    feats = {f: pa.array([r.users.get(u, (UNKNOWN,) * 4)[k] or UNKNOWN for u in user_tokens.to_pylist()], pa.string())
             for k, f in enumerate(USER_FEATURES)}
    genre_lists = [r.genres.get(i, []) or [UNKNOWN] for i in item_tokens.to_pylist()]
    g_offsets = np.r_[0, np.cumsum([len(g) for g in genre_lists])]
    g_values = pa.array([g for gs in genre_lists for g in gs], pa.string())
    tables = {}
    for code, name in enumerate(("train", "valid", "test")):
        sel = np.flatnonzero(where == code)
        flat, offsets = window_indices(h_begin[sel], h_end[sel])
        g_flat, g_off = window_indices(g_offsets[item[sel]], g_offsets[item[sel] + 1])
        cols = {"label": pa.array(click[sel].astype(np.float64)),
                "user_id": user_tokens.take(pa.array(user[sel])),
                "item_id": item_tokens.take(pa.array(item[sel]))}
        for f in USER_FEATURES:
            cols[f] = feats[f].take(pa.array(user[sel]))
        cols["genres"] = pa.ListArray.from_arrays(pa.array(g_off.astype(np.int32)), g_values.take(pa.array(g_flat)))
        cols["item_history"] = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                                        item_tokens.take(pa.array(item[clicked[flat]])))
        tables[name] = pa.table(cols)
    return tables


def read_movielens(ctx: ReadContext) -> SourceResult:
    o = ctx.options
    layout, files = detect(ctx.source_dir, o)
    d = Path(ctx.source_dir)
    ratings = {"100k": lambda: read_100k(d), "100k-raw": lambda: read_100k_raw(d), "latest": lambda: read_latest(d),
               "1m": lambda: read_1m(d), "merged": lambda: read_merged(files[0])}[layout]()
    tables = build_samples(ratings, o)
    if ctx.test_as_valid:
        tables["train"] = pa.concat_tables([tables["train"], tables.pop("valid")])
    for split, table in tables.items():
        if table.num_rows == 0:
            raise UserError(f"{ratings.source}: the '{split}' split is empty (too few ratings per user for split={o.split})")
    info = {"layout": layout, "ratings": len(ratings.user), "users": len(set(ratings.user)),
            "click": f"rating >= {o.threshold}", "split": o.split}
    return SourceResult(tables, {s: f"{ratings.source} ({s} samples)" for s in tables}, info=info)


register(Layout("movielens", MovieLensOptions, read_movielens, lambda ctx: detect(ctx.source_dir, ctx.options)[1],
                help="MovieLens 100K (RecBole *.inter/.user/.item or u.data/u.user/u.item), latest(-small) "
                     "ratings.csv/movies.csv, 1M ratings.dat/users.dat/movies.dat, or a merged CSV"))
