"""A SYNTHETIC MovieLens folder for the main-job and benchmark tests: made-up movies, users, ratings and tags in
GroupLens' file formats (not real data; the real files are tested in tests/data).

Rating users: 1 loves science fiction (5 stars for Sci-Fi, 2 for the rest); 2 is a harsh critic (1 star for
everything); 3 has only 5 ratings (too few for the tests' splits). Tagging users: 1 tags mostly "sci-fi", 2 mostly
"comedy"; 3 has 3 tagged movies (too few); every user also has one tag outside LaMP-2's vocabulary.
"""

import gzip
from collections.abc import Sequence
from pathlib import Path

GENRES = ["Sci-Fi", "Comedy|Romance", "Drama", "Sci-Fi|Action", "Comedy", "Horror|Thriller"]
MOVIES = [(i, f"Synthetic Film {i:02d}", 1970 + i, GENRES[i % len(GENRES)]) for i in range(1, 25)]
TITLES = {movie_id: title for movie_id, title, _, _ in MOVIES}


def _ratings() -> list[str]:
    rows = []
    for movie_id, _, _, genres in MOVIES[:20]:
        rows.append(f"1,{movie_id},{5.0 if 'Sci-Fi' in genres else 2.0},{1000 + movie_id}")
    rows += [f"2,{movie_id},1.0,{2000 + movie_id}" for movie_id, *_ in MOVIES[4:24]]
    rows += [f"3,{movie_id},3.5,{3000 + movie_id}" for movie_id, *_ in MOVIES[:5]]
    return rows


def _tags() -> list[str]:
    rows = ["userId,movieId,tag,timestamp"]
    rows += [f"1,{m},{'Sci-Fi' if m % 3 else 'comedy'},{1000 + m}" for m in range(1, 13)]
    rows += [f"2,{m},{'comedy' if m % 4 else 'romance'},{2000 + m}" for m in range(10, 22)]
    rows += [f"3,{m},dystopia,{3000 + m}" for m in range(1, 4)]
    rows += [f"{user},{20 + user},not a lamp tag,{4000 + user}" for user in (1, 2, 3)]
    return rows


def write_synthetic_movielens(root: Path, *, extra_ratings: Sequence[str] = ()) -> Path:
    """Write the SYNTHETIC folder `root/movielens_ml_latest_small` (movies.csv and ratings.csv.gz without a header,
    tags.csv with one, as in ../shared/data) and return it; `extra_ratings` are appended to ratings.csv.gz as they
    are (e.g. bad lines)."""
    folder = root / "movielens_ml_latest_small"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "movies.csv").write_text("".join(f"{i},{t} ({y}),{g}\n" for i, t, y, g in MOVIES))
    with gzip.open(folder / "ratings.csv.gz", "wt") as handle:
        handle.write("".join(f"{row}\n" for row in [*_ratings(), *extra_ratings]))
    (folder / "tags.csv").write_text("".join(f"{row}\n" for row in _tags()))
    return folder
