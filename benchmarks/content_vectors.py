"""Item content vectors built from item metadata that the public datasets carry, for `loopctr prepare --content`.

    python benchmarks/content_vectors.py movielens ../shared/data/movielens_100k/ml-100k.item OUT/ml100k.npz
    python benchmarks/content_vectors.py amazon ../shared/data/amazon_sports/Sports_and_Outdoors_item2attributes.json OUT/sports.npz

These stand in for the multi-modal embeddings of MIM (images, titles through a pre-trained encoder), which no
dataset here has: each item's metadata as a bag of tokens (MovieLens: title words, release year and decade, genres;
Amazon: brand and category-path ids, which have no names), TF-IDF weighted through scikit-learn's hashing
vectoriser, reduced by a truncated SVD to `--dim` dimensions. Written as a .npz with arrays key (item id) and
value ([items, dim] float32). The vectors use item metadata only, never interactions, so no split leaks into them.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np


def movielens_documents(path: Path) -> tuple[list[str], list[list[str]]]:
    """The RecBole ml-100k.item file: item_id, movie_title, release_year, class (genres, space separated)."""
    ids, docs = [], []
    lines = path.read_text(encoding="latin-1").splitlines()
    for line in lines[1:]:
        item, title, year, genres = (line.split("\t") + ["", "", ""])[:4]
        tokens = [f"w={w}" for w in re.findall(r"[a-z0-9']+", title.lower())]
        if year.strip().isdigit():
            tokens += [f"year={year.strip()}", f"decade={year.strip()[:3]}"]
        tokens += [f"genre={g}" for g in genres.split()]
        ids.append(item.strip())
        docs.append(tokens)
    return ids, docs


def amazon_documents(path: Path) -> tuple[list[str], list[list[str]]]:
    """S3-Rec's X_item2attributes.json: item -> [brand, category path...] ids in one id space."""
    attributes = json.loads(path.read_text())
    ids = sorted(attributes, key=int)
    docs = [[f"brand={a}" if i == 0 else f"category={a}" for i, a in enumerate(attributes[item])] for item in ids]
    return ids, docs


def content_vectors(docs: list[list[str]], dim: int, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    counts = HashingVectorizer(analyzer=lambda tokens: tokens, n_features=2 ** 16, alternate_sign=False,
                               norm=None).transform(docs)
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    return TruncatedSVD(n_components=dim, random_state=seed).fit_transform(tfidf).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["movielens", "amazon"])
    parser.add_argument("source", type=Path, help="ml-100k.item or X_item2attributes.json")
    parser.add_argument("out", type=Path, help="the .npz to write")
    parser.add_argument("--dim", type=int, default=32)
    args = parser.parse_args(argv)
    ids, docs = (movielens_documents if args.kind == "movielens" else amazon_documents)(args.source)
    vectors = content_vectors(docs, args.dim)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, key=np.array(ids), value=vectors)
    print(f"{args.out}: {len(ids):,} items x {vectors.shape[1]} (from {sum(map(len, docs)):,} metadata tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
