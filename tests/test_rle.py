"""COCO RLE: our string decoder agrees with pycocotools, and short runs are refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco

from smaskd.errors import InputError
from smaskd.rle import counts_from_string, decode_rle, encode_rle, polygon_to_mask


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
