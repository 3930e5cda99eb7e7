"""COCO RLE: our string decoder agrees with pycocotools, and short runs are refused.

The string decoder has a vectorised fast path and an exact pure-Python reference it falls
back to; the properties below hold the fast path to the reference on what pycocotools
writes and on arbitrary (also broken) strings, error messages included.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco

from smaskd.errors import InputError
from smaskd.geometry.rle import (
    _counts_from_string_exact,
    counts_from_string,
    counts_total_from_string,
    decode_rle,
    encode_rle,
    polygon_to_mask,
)

_ALPHABET = "".join(map(chr, range(48, 112)))  # '0'..'o'
_CONTINUES = _ALPHABET[32:]  # bit 0x20 set: more digits follow
_LAST = _ALPHABET[:32]
_BAD = "/p \x00\x7f\xe9\u20ac\U0001f600"  # just outside the alphabet, and non-ASCII


def _outcome(decode, text):
    try:
        return decode(text)
    except ValueError as e:
        return ("ValueError", str(e))


def _assert_fast_path_agrees(text):
    expected = _outcome(_counts_from_string_exact, text)
    assert _outcome(counts_from_string, text) == expected
    if isinstance(expected, list):
        assert counts_total_from_string(text) == (sum(expected), any(r < 0 for r in expected))
        assert all(type(r) is int for r in counts_from_string(text))
    else:
        assert _outcome(counts_total_from_string, text) == expected


@settings(max_examples=150, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.integers(0, 1)))
def test_string_counts_round_trip_with_pycocotools(mask):
    rle = encode_rle(mask)
    runs = counts_from_string(rle["counts"])
    assert sum(runs) == mask.size
    recompressed = coco.frPyObjects({"counts": runs, "size": rle["size"]}, *rle["size"])
    assert recompressed["counts"].decode("ascii") == rle["counts"]
    assert np.array_equal(decode_rle(rle["counts"], *mask.shape), mask)


def test_short_or_garbage_strings_are_refused_not_decoded():
    with pytest.raises(InputError, match="sum to 6"):
        decode_rle("06", 10, 6)
    with pytest.raises(InputError, match="invalid"):
        decode_rle("0\x7f", 2, 2)
    with pytest.raises(InputError, match="sum to 3"):
        decode_rle([1, 2], 2, 2)


def test_polygon_fill_is_pycocotools_half_open_rule():
    # FORMAT.md §4.3: the CVAT box (1,1)-(4,3) covers columns 1..3 and rows 1..2.
    m = polygon_to_mask([1, 1, 4, 1, 4, 3, 1, 3], 4, 6)
    assert m.sum() == 6 and m[1:3, 1:4].all()


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(1, 300),
    st.sampled_from([0.0, 0.001, 0.05, 0.5, 0.95, 1.0]),
    st.integers(0, 2**32 - 1),
)
def test_fast_decode_agrees_with_reference_on_pycocotools_strings(height, width, density, seed):
    # Sparse and dense masks of many sizes: one- to four-digit numbers, long and short runs.
    mask = (np.random.default_rng(seed).random((height, width)) < density).astype(np.uint8)
    text = coco.encode(np.asfortranarray(mask))["counts"].decode("ascii")
    _assert_fast_path_agrees(text)
    assert counts_total_from_string(text) == (mask.size, False)


_number = st.builds(
    lambda more, last: "".join(more) + last,
    st.lists(st.sampled_from(_CONTINUES), max_size=14),  # to 15 digits, 75 bits: past int64
    st.sampled_from(_LAST),
)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=_ALPHABET + _BAD, max_size=60),
        st.text(alphabet=_ALPHABET, max_size=200),
        st.lists(_number, max_size=40).map("".join),
        # a well-formed string with a truncated tail or one bad character somewhere
        st.tuples(st.lists(_number, max_size=40).map("".join), st.text(_CONTINUES, max_size=3)).map(
            "".join
        ),
        st.tuples(
            st.lists(_number, max_size=20).map("".join),
            st.sampled_from(_BAD),
            st.lists(_number, max_size=20).map("".join),
        ).map("".join),
    )
)
def test_fast_decode_agrees_with_reference_on_arbitrary_strings(text):
    _assert_fast_path_agrees(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "O",  # -1
        "ooooo?",  # six digits, the most negative a fast-path number can be (-2**29)
        "ooooo" + "O",  # six digits, -1
        "oooooo?",  # seven digits: left to the exact decoder
        "ooooooooooooooooooooO" * 3,  # numbers far past int64
        "P",  # truncated
        "00\x7f0P",  # the first problem wins: a bad character before the truncation
        "0\u20ac",
    ],
)
def test_fast_decode_edges(text):
    _assert_fast_path_agrees(text)


def test_sum_of_many_huge_runs_is_exact():
    # 2**19 runs, half of them growing by 2**29 - 1 each: every run fits int64, their sum
    # does not, and must still come out exact.
    text = "ooooo?" + "0ooooo?" * (1 << 18)
    runs = _counts_from_string_exact(text)
    assert sum(runs) >= 1 << 63
    assert counts_total_from_string(text) == (sum(runs), False)
    assert counts_from_string(text) == runs
