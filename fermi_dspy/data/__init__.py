"""Real per-user opinion data as DSPy examples, with deterministic per-user splits.

Loads the data in `../shared/data` (or `$FERMI_DSPY_DATA`) into one `UserRecord` per user:

* "opinionqa_panelists" ("panelists"): Pew ATP panelists with the 12 OpinionQA attributes and ~1000 answers each.
* "opinionqa_hwang" ("hwang"): Hwang et al. 2023 users, one per (topic, user), party/ideology and 30 answers.
* "globalopinionqa" ("global"): GlobalOpinionQA countries; the label is the country's most chosen option.
* "movielens_rating" ("movielens-rating"): MovieLens raters, no profile; Example(title, year, genres -> rating),
  LaMP-3-like (see `fermi_dspy.data.movielens`).
* "movielens_tag" ("movielens-tag"): MovieLens taggers, no profile; Example(title, year, genres, options -> tag), the
  tag and options within LaMP-2's 15 tags (`LAMP2_TAGS`), LaMP-2-like.

Example:
    ```python
    from fermi_dspy.data import load_users, split_user

    users = load_users("hwang", on_bad_record="skip")
    split = split_user(users[0], n_train=10, n_test=20, seed=0)
    split.train[0]  # Example(question=..., options=[...], answer=...) (input_keys={'question', 'options'})
    ```
"""

from fermi_dspy.data.hf import records_from_hf_dataset, to_hf_dataset
from fermi_dspy.data.loading import ALIASES, DATASETS, canonical_dataset, load_users
from fermi_dspy.data.movielens import (
    LAMP2_TAGS,
    MOVIELENS_RATING,
    MOVIELENS_TAG,
    make_rating_example,
    make_tag_example,
    match_tag,
    parse_title,
)
from fermi_dspy.data.paths import DATA_DIR_ENV, default_data_dir
from fermi_dspy.data.problems import BadRecord, DataError, DataNotFoundError
from fermi_dspy.data.records import LoadedUsers, UserRecord, make_example
from fermi_dspy.data.splits import UserSplit, split_user, split_users

__all__ = [
    "ALIASES",
    "DATASETS",
    "DATA_DIR_ENV",
    "LAMP2_TAGS",
    "MOVIELENS_RATING",
    "MOVIELENS_TAG",
    "BadRecord",
    "DataError",
    "DataNotFoundError",
    "LoadedUsers",
    "UserRecord",
    "UserSplit",
    "canonical_dataset",
    "default_data_dir",
    "load_users",
    "make_example",
    "make_rating_example",
    "make_tag_example",
    "match_tag",
    "parse_title",
    "records_from_hf_dataset",
    "split_user",
    "split_users",
    "to_hf_dataset",
]
