"""Deduplicating problems before selection: exact (normalized text) and near (MinHash LSH).

A problem asked twice would be trained on twice as often and would leak between splits, so the filter
stage keeps one copy. Both passes read the prompt table (`prompt_id`, `problem`), walk it in input
order and keep the first of each group, so the result is the same on every run and machine; each
dropped prompt names the kept prompt it repeats (`duplicate_of`).

Near duplicates are found with MinHash over word 5-gram shingles and datasketch's `MinHashLSH`. The
LSH threshold is a Jaccard similarity of shingle sets, which falls fast with edits in short texts: one
word changed in the middle of an N-word problem changes up to 5 of its N-4 shingles, so the pair's
Jaccard is (N-9)/(N+1), which reaches 0.8 only from N = 49 words. Short problems that differ in one
middle word are therefore kept by default; lower `threshold` or `shingle` to catch them.
"""

from __future__ import annotations

import logging
import re
import unicodedata

import polars as pl

from r1distill.errors import UsageError
from r1distill.schema import PROBLEM, PROMPT_ID

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
MODES = ("exact", "near", "none")

_WHITESPACE = re.compile(r"\s+")
# Sentence punctuation only: a closing ")", "]", "}" or "$" can be part of the math.
_TRAILING_PUNCTUATION = ".?!,;: "


def normalize_text(text: str) -> str:
    """The text two problems must share to count as the same problem.

    NFKC (full-width and compatibility forms become plain ones), case folding, runs of whitespace
    collapsed to one space, leading and trailing whitespace removed, and trailing sentence
    punctuation (`. ? ! , ; :`) removed. Inner punctuation is kept: "2+3" and "2*3" stay different.

    >>> normalize_text("  What IS\\n 2+2 ?? ")
    'what is 2+2'
    >>> normalize_text("Ｆｉｎｄ  x.") == normalize_text("find x")
    True
    """
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    return text.strip().rstrip(_TRAILING_PUNCTUATION)


def exact_duplicates(prompts: pl.DataFrame) -> pl.DataFrame:
    """`prompt_id` and `duplicate_of`: the first prompt (input order) with the same normalized problem.

    `duplicate_of` is null for the first of each group, and for every unique problem.

    >>> prompts = pl.DataFrame({"prompt_id": ["a", "b", "c"], "problem": ["Find x.", "FIND  x", "Find y"]})
    >>> exact_duplicates(prompts)["duplicate_of"].to_list()
    [None, 'a', None]
    """
    keys = prompts[PROBLEM].map_elements(normalize_text, return_dtype=pl.String)
    first = pl.col(PROMPT_ID).first().over(keys)
    return prompts.select(
        PROMPT_ID,
        pl.when(first != pl.col(PROMPT_ID)).then(first).otherwise(None).cast(pl.String).alias("duplicate_of"),
    )


def near_duplicates(
    prompts: pl.DataFrame, threshold: float = 0.8, num_perm: int = 128, shingle: int = 5, seed: int = 1
) -> pl.DataFrame:
    """`prompt_id` and `duplicate_of`: the first earlier kept prompt whose MinHash the LSH matches.

    Prompts are taken in input order; each is looked up in the LSH before it is inserted, and only
    kept prompts are inserted, so a duplicate always points at a kept prompt. Shingles are runs of
    `shingle` words of the normalized problem (words split on whitespace, so "2+3" is one word); a
    problem with fewer words is one shingle of all its words, and a problem with no words is never a
    near duplicate. MinHash permutations come from `seed` and shingles are hashed with SHA-1, so the
    result is the same in every process.

    >>> words = " ".join(f"w{i}" for i in range(20))
    >>> prompts = pl.DataFrame({"prompt_id": ["a", "b", "c"], "problem": [words, words + " end", "other text"]})
    >>> near_duplicates(prompts)["duplicate_of"].to_list()
    [None, 'a', None]
    """
    # Imported here: datasketch pulls in SciPy (0.3 s), which only near dedup needs.
    from datasketch import MinHash, MinHashLSH

    try:
        index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError as err:  # out of [0, 1], or too close to 1 to leave two LSH bands
        raise UsageError(
            f"near-duplicate threshold {threshold} cannot be used with {num_perm} MinHash permutations ({err}); "
            "give a Jaccard similarity between 0.1 and 0.95"
        ) from err
    ids = prompts[PROMPT_ID].to_list()
    shingle_sets = [_shingles(text, shingle) for text in prompts[PROBLEM].to_list()]
    # bulk() builds the permutations once and copies them, instead of once per MinHash.
    minhashes = MinHash.bulk(shingle_sets, num_perm=num_perm, seed=seed)
    duplicate_of: list[str | None] = [None] * len(ids)
    for row, (shingles, minhash) in enumerate(zip(shingle_sets, minhashes)):
        if not shingles:
            continue
        matches = index.query(minhash)
        if matches:
            # Keys are row numbers: the smallest is the earliest kept prompt.
            duplicate_of[row] = ids[min(matches)]
        else:
            index.insert(row, minhash, check_duplication=False)
    return pl.DataFrame({PROMPT_ID: ids, "duplicate_of": duplicate_of}, schema={PROMPT_ID: pl.String, "duplicate_of": pl.String})


def dedup(prompts: pl.DataFrame, mode: str = "exact", threshold: float = 0.8) -> pl.DataFrame:
    """`prompt_id`, `drop_reason` and `duplicate_of` for every prompt, in input order.

    `drop_reason` is null for a kept prompt, "duplicate" for an exact duplicate (modes "exact" and
    "near") and "near_duplicate" for a near duplicate of a kept prompt (mode "near", which looks for
    near duplicates only among the prompts the exact pass keeps). Mode "none" keeps everything.
    Count the drops with `result["drop_reason"].value_counts()`.

    >>> prompts = pl.DataFrame({"prompt_id": ["a", "b"], "problem": ["Find x.", "find x"]})
    >>> dedup(prompts).rows()
    [('a', None, None), ('b', 'duplicate', 'a')]
    """
    if mode not in MODES:
        raise UsageError(f"unknown dedup mode '{mode}'; use one of {', '.join(MODES)}")
    if mode == "none":
        return prompts.select(PROMPT_ID, *(pl.lit(None, pl.String).alias(c) for c in ("drop_reason", "duplicate_of")))
    result = exact_duplicates(prompts).with_columns(
        pl.when(pl.col("duplicate_of").is_not_null()).then(pl.lit(DUPLICATE)).otherwise(None).alias("drop_reason")
    )
    if mode == "near":
        kept = prompts.filter(result["duplicate_of"].is_null())
        near = near_duplicates(kept, threshold=threshold).rename({"duplicate_of": "near_of"})
        result = (
            result.join(near, on=PROMPT_ID, how="left", maintain_order="left")
            .with_columns(
                pl.when(pl.col("near_of").is_not_null())
                .then(pl.lit(NEAR_DUPLICATE))
                .otherwise(pl.col("drop_reason"))
                .alias("drop_reason"),
                pl.coalesce("duplicate_of", "near_of").alias("duplicate_of"),
            )
            .drop("near_of")
        )
    result = result.select(PROMPT_ID, "drop_reason", "duplicate_of")
    log.info(
        "dedup (%s): %d prompts, %d duplicates, %d near duplicates",
        mode,
        result.height,
        (result["drop_reason"] == DUPLICATE).sum(),
        (result["drop_reason"] == NEAR_DUPLICATE).sum(),
    )
    return result


def _shingles(text: str, size: int) -> set[bytes]:
    words = normalize_text(text).split()
    if len(words) < size:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[start : start + size]).encode() for start in range(len(words) - size + 1)}

