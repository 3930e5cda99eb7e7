"""Safe JSON loading: encodings, constants, depth, size, syntax errors — always InputError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smaskd.annotations.jsonload import (
    At,
    expect_int,
    expect_number,
    expect_numbers,
    load_json_bytes,
    load_json_file,
)
from smaskd.errors import InputError, SmaskdError


def test_plain_and_bom_utf8_load_the_same():
    doc = {"a": [1, 2.5, "é"]}
    raw = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    assert load_json_bytes(raw) == doc
    assert load_json_bytes(b"\xef\xbb\xbf" + raw) == doc


@pytest.mark.parametrize("bom", [b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00"])
def test_utf16_and_utf32_are_refused_by_name(bom):
    with pytest.raises(InputError, match="UTF-(16|32).*save it as UTF-8"):
        load_json_bytes(bom + '{"a": 1}'.encode("utf-16-le"))


def test_invalid_utf8_names_the_byte_offset():
    with pytest.raises(InputError, match="byte offset 7"):
        load_json_bytes(b'{"a": "\xff"}')
    # the offset counts from the start of the file, BOM included
    with pytest.raises(InputError, match="byte offset 10"):
        load_json_bytes(b'\xef\xbb\xbf{"a": "\xc3"}')


@pytest.mark.parametrize("const", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_with_position(const):
    with pytest.raises(InputError) as e:
        load_json_bytes(f'{{"a": "NaN",\n "b": [1, {const}]}}'.encode())
    assert const in str(e.value)
    assert "line 2 column 11" in str(e.value)


def test_constants_inside_strings_are_fine():
    assert load_json_bytes(b'{"NaN": "Infinity"}') == {"NaN": "Infinity"}


def test_deep_nesting_is_refused_before_parsing():
    with pytest.raises(InputError, match="nesting deeper than 512"):
        load_json_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(InputError, match="line 1 column 4"):
        load_json_bytes(b"[" * 5, max_depth=3)


def test_depth_at_the_limit_is_accepted():
    assert load_json_bytes(b"[" * 512 + b"]" * 512) is not None


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"s": "[" * 5000, "t": 'a\\"[[[[\\\\', "u": '{\\"['})
    assert load_json_bytes(text.encode(), max_depth=2) == json.loads(text)


def test_escaped_backslash_before_quote_ends_the_string():
    # "\\" is a complete string; the bracket after it is structure, not text
    with pytest.raises(InputError, match="nesting deeper than 1"):
        load_json_bytes(b'["\\\\", [1]]', max_depth=1)


def test_syntax_error_has_line_and_column():
    with pytest.raises(InputError, match=r"line 3 column 5"):
        load_json_bytes(b'{\n "a": 1,\n    }')


def test_empty_file_is_a_syntax_error():
    with pytest.raises(InputError, match="line 1 column 1"):
        load_json_bytes(b"")


def test_too_many_integer_digits_is_an_input_error():
    with pytest.raises(InputError):
        load_json_bytes(b"[" + b"9" * 10_000 + b"]")


def test_size_cap_is_checked_before_reading(tmp_path):
    p = tmp_path / "big.json"
    p.write_bytes(b"[" + b"1," * 100 + b"1]")
    assert len(load_json_file(p)) == 101
    with pytest.raises(InputError, match="over the limit of 50"):
        load_json_file(p, max_bytes=50)


def test_unreadable_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_json_file(tmp_path / "missing.json")


def test_where_names_the_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b"{oops")
    with pytest.raises(InputError) as e:
        load_json_file(p, name="original.json")
    assert e.value.where == "original.json"


def test_at_formats_path_and_context():
    at = At("f.json").key("items").index(3).within("item 'a'").key("annotations").index(2)
    assert str(at.within("annotation id 5").key("points")) == (
        "f.json: items[3].annotations[2].points (item 'a', annotation id 5)"
    )


def test_expect_helpers_refuse_wrong_types():
    at = At("f.json", "x")
    with pytest.raises(InputError, match="expected an integer, got a boolean"):
        expect_int(True, at)
    assert expect_int(5.0, at) == 5
    with pytest.raises(InputError, match="out of range"):
        expect_number(float("inf"), at)
    with pytest.raises(InputError, match=r"x\[1\]: expected a number, got a string"):
        expect_numbers([1, "2"], at)
    with pytest.raises(InputError, match="out of range"):
        expect_numbers([1, 1e400], at)
    with pytest.raises(InputError, match="multiple of 2"):
        expect_numbers([1, 2, 3], at, multiple_of=2)
    assert expect_numbers([1, 2.5], at) == (1, 2.5)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_round_trip_matches_stdlib(value):
    text = json.dumps(value, ensure_ascii=False)
    assert load_json_bytes(text.encode("utf-8")) == json.loads(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='[]{}"\\,:0a \n', max_size=200).map(str.encode))
def test_arbitrary_bytes_parse_or_raise_input_error(data):
    try:
        load_json_bytes(data, max_depth=8)
    except SmaskdError:
        pass
