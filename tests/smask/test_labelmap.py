"""labelmap.txt: CVAT's grammar, its exact writer output, and errors that name the line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smaskd.errors import InputError
from smaskd.smask.labelmap import (
    HEADER,
    LabelmapEntry,
    categories_from_labelmap,
    format_labelmap,
    parse_labelmap,
    voc_default_labelmap,
)

CVAT_EXAMPLE = (
    "# label:color_rgb:parts:actions\n"
    "Zebra:0,0,255::\n"
    "airplane:18,52,86::\n"
    "background:0,0,0::\n"
    "car:0,255,0::\n"
    "person:255,0,0::\n"
)


def test_cvat_example_round_trips_byte_for_byte():
    entries = parse_labelmap(CVAT_EXAMPLE)
    assert [e.name for e in entries] == ["Zebra", "airplane", "background", "car", "person"]
    assert entries[1].color == (18, 52, 86)
    assert format_labelmap(entries) == CVAT_EXAMPLE


def test_grammar_details():
    text = "\ufeff  cat :1, 2 ,3:head, tail:sit\r\n\n# comment\n  #also comment\nnocolor:::\n"
    cat, nocolor = parse_labelmap(text)
    assert cat == LabelmapEntry("cat ", (1, 2, 3), ("head", "tail"), ("sit",))
    assert nocolor == LabelmapEntry("nocolor", None)
    assert format_labelmap([cat, nocolor]) == HEADER + "cat :1,2,3:head,tail:sit\nnocolor:::\n"


@pytest.mark.parametrize("text, line, match", [
    ("a:1,2,3::\nb:1,2,3\n", 2, "wrong number of fields 2"),
    ("a:1,2,3::\n\n#x\nb:1,2,3:::\n", 4, "wrong number of fields 5"),
    ("a:1,2,3::\na:4,5,6::\n", 2, "already defined"),
    ("a:255,0::\n", 1, "r,g,b"),
    ("a:x,0,0::\n", 1, "integers"),
    ("a:300,0,0::\n", 1, "outside 0..255"),
])
def test_errors_name_the_line(text, line, match):
    with pytest.raises(InputError, match=match) as e:
        parse_labelmap(text, source="lm.txt")
    assert e.value.where == f"lm.txt:{line}"


def test_categories_generate_voc_colours_only_without_any_colour():
    plain = categories_from_labelmap(parse_labelmap("background:::\ncat:::\n"))
    assert [(lb.name, lb.color) for lb in plain] == [
        ("background", (0, 0, 0)), ("cat", (128, 0, 0))]
    mixed = categories_from_labelmap(parse_labelmap("a:1,2,3::\nb:::\n"))
    assert [lb.color for lb in mixed] == [(1, 2, 3), None]


def test_voc_defaults():
    voc = voc_default_labelmap()
    assert len(voc) == 22 and voc[0] == LabelmapEntry("background", (0, 0, 0))
    assert voc[-1] == LabelmapEntry("ignored", (224, 224, 192))
    assert voc[15].parts == ("foot", "hand", "head")


_name = st.text(
    alphabet=st.characters(blacklist_characters=":\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029",
                           blacklist_categories=("Cs",)),
    min_size=1, max_size=12,
).filter(lambda s: s == s.lstrip() and s.strip() and not s.startswith("#"))
_item = st.text(alphabet="abcXYZ_-. 1", min_size=1, max_size=6).map(str.strip).filter(bool)
_color = st.one_of(st.none(), st.tuples(*[st.integers(0, 255)] * 3))


@given(st.lists(st.tuples(_name, _color, st.lists(_item, max_size=3), st.lists(_item, max_size=3)),
                max_size=8, unique_by=lambda t: t[0]))
def test_parse_format_round_trip(rows):
    # names keep inner and trailing spaces: only the line's ends are stripped, and the name
    # is the first of four fields
    entries = [LabelmapEntry(n, c, tuple(p), tuple(a)) for n, c, p, a in rows]
    text = format_labelmap(entries)
    assert parse_labelmap(text) == entries
    assert format_labelmap(parse_labelmap(text)) == text
