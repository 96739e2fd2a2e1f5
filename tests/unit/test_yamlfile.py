"""The bounded YAML loader: what it reads as PyYAML does, and what it refuses in one line."""

import os

import pytest

from rackforge import errors, yamlfile
from rackforge.yamlfile import NODE, OPERATOR, YamlError


def load(tmp_path, text, limits=OPERATOR):
    path = tmp_path / "f.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return yamlfile.load(path, limits)


def refusal(tmp_path, text, limits=OPERATOR):
    with pytest.raises(YamlError) as e:
        load(tmp_path, text, limits)
    line = str(e.value)
    assert "\n" not in line and line.isprintable()
    assert isinstance(e.value, errors.ConfigError) and e.value.exit_code == 2
    return line.replace(str(tmp_path / "f.yaml"), "f.yaml")


def test_ordinary_yaml_reads_as_the_safe_loader_reads_it(tmp_path):
    text = ("a: 1\nb: [true, null, 1.5, 017, 0x1f, 1_000]\nc: {d: 'x', e: &e [1]}\n"
            "f: *e\ng: {<<: {h: 1}, i: 2}\n")
    assert load(tmp_path, text) == {"a": 1, "b": [True, None, 1.5, 15, 31, 1000],
                                    "c": {"d": "x", "e": [1]}, "f": [1], "g": {"h": 1, "i": 2}}


def test_a_date_stays_the_string_it_is_written_as(tmp_path):
    assert load(tmp_path, "a: 2024-01-31\nb: 2024-13-45\nc: 2001-12-14 21:59:43.10 -5\n") == {
        "a": "2024-01-31", "b": "2024-13-45", "c": "2001-12-14 21:59:43.10 -5"}


def test_a_byte_order_mark_is_skipped(tmp_path):
    assert load(tmp_path, b"\xef\xbb\xbfa: 1\n") == {"a": 1}


def test_an_empty_file_is_none(tmp_path):
    assert load(tmp_path, "# nothing\n") is None


def test_lines_of_every_key(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("# c\na:\n  b: [x, y]\n")
    data, lines = yamlfile.load_with_lines(path)
    assert data == {"a": {"b": ["x", "y"]}}
    assert lines == {"": 2, "a": 2, "a.b": 3, "a.b[0]": 3, "a.b[1]": 3}


@pytest.mark.parametrize("text, line", [
    ("a: {b: 0b_}\n", "f.yaml:1: a.b: YAML: '0b_' cannot be read as an integer"),
    ("a:\n  - 0x_\n", "f.yaml:2: a[0]: YAML: '0x_' cannot be read as an integer"),
    ("a: !!timestamp 2024-13-45\n",
     "f.yaml:1: a: YAML: '2024-13-45' cannot be read as a date"),
    ("a: !!bool maybe\n", "f.yaml:1: a: YAML: 'maybe' cannot be read as true or false"),
    ("a: !!float x\n", "f.yaml:1: a: YAML: 'x' cannot be read as a number"),
    ("a: %s\n" % ("9" * 5000), "f.yaml:1: a: YAML: the value cannot be read as an integer"),
    ("a: !!binary 'é'\n", "f.yaml:1: a: YAML: failed to convert base64 data into ascii: "
     "'ascii' codec can't encode character '\\xe9' in position 0: ordinal not in range(128)"),
    ("a: !quorum 3\n", "f.yaml:1: a: YAML: could not determine a constructor for the tag "
     "'!quorum'"),
    ("? [a]\n: 1\n", "f.yaml:1: YAML: found unhashable key"),
    ("a: [\n", "f.yaml:2: YAML syntax: while parsing a flow node, expected the node content, "
     "but found '<stream end>'"),
    ("a: *nope\n", "f.yaml:1: YAML syntax: found undefined alias 'nope'"),
    ("a: 1\n---\nb: 2\n", "f.yaml:2: YAML syntax: expected a single document in the stream, "
     "but found another document"),
    ("a: \x07\n", "f.yaml:1: a control character (#x0007) that YAML does not allow"),
    (b"a: 1\nb: caf\xe9\n", "f.yaml:2: not UTF-8 text (byte 12 of the file)"),
])
def test_every_bad_value_is_one_line_with_the_file_line_and_key(tmp_path, text, line):
    assert refusal(tmp_path, text) == line


def test_deep_nesting_is_refused_at_the_limit(tmp_path):
    depth = OPERATOR.max_depth
    assert load(tmp_path, "[" * depth + "]" * depth)
    assert refusal(tmp_path, "a: " + "[" * (depth + 1) + "]" * (depth + 1)) == \
        "f.yaml:1: nested deeper than %d levels" % depth
    assert refusal(tmp_path, "a: " + "[" * 100000) == \
        "f.yaml:1: nested deeper than %d levels" % depth


def test_aliases_count_as_what_they_expand_to(tmp_path):
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        "%s: &%s [%s]\n" % (chr(98 + i), chr(98 + i), ", ".join(["*" + chr(97 + i)] * 10))
        for i in range(8))
    assert refusal(tmp_path, laughs) == \
        "f.yaml:4: more than %d values (aliases expanded)" % OPERATOR.max_nodes
    deep = "a: &a [[[[[[[[[[x]]]]]]]]]]\n" + "".join(
        "%s: &%s [[[[[[[[[[*%s]]]]]]]]]]\n" % (chr(98 + i), chr(98 + i), chr(97 + i))
        for i in range(3))
    assert "nested deeper than %d levels (aliases expanded)" % OPERATOR.max_depth in \
        refusal(tmp_path, deep)


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "&a [x, *a]\n"])
def test_a_recursive_alias_is_refused(tmp_path, text):
    assert "a recursive alias" in refusal(tmp_path, text)


def test_the_number_of_aliases_is_capped(tmp_path):
    text = "a: &a x\nb: [%s]\n" % ", ".join(["*a"] * (OPERATOR.max_aliases + 1))
    assert "more than %d aliases" % OPERATOR.max_aliases in refusal(tmp_path, text)


def test_a_node_file_takes_no_alias_at_all(tmp_path):
    assert refusal(tmp_path, "a: &a x\nb: *a\n", NODE) == \
        "f.yaml:2: aliases (*NAME) are not allowed in this file"


def test_a_node_file_error_quotes_nothing_from_the_file(tmp_path):
    secret = "abcdef.0123456789abcdef"
    for text in ("a: *%s\n" % secret, "%s: !%s 1\n" % (secret, secret),
                 "a: !!int %s\n" % secret, "a: {%s: [}\n" % secret):
        assert secret not in refusal(tmp_path, text, NODE)
        assert "0123456789" not in refusal(tmp_path, text, NODE)


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path):
    assert refusal(tmp_path, "a: %s\n" % ("x" * OPERATOR.max_bytes)) == \
        "f.yaml: cannot read: larger than the %d-byte limit" % OPERATOR.max_bytes


def test_a_fifo_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "f.yaml")
    with pytest.raises(YamlError, match="not a regular file"):
        yamlfile.load(tmp_path / "f.yaml")


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        yamlfile.load(tmp_path / "nope.yaml")


def test_control_characters_never_reach_the_terminal(tmp_path):
    line = refusal(tmp_path, '"\\e[2J\\x07": !x 1\n')
    assert "\x1b" not in line and "\\x1b[2J" in line


def test_problem_lines_are_capped():
    more = "... and %d more" % (200000 - errors.MAX_LINES)
    assert errors.capped(["p%d" % i for i in range(200000)]) == \
        ["p%d" % i for i in range(errors.MAX_LINES)] + [more]
    assert errors.capped(["a", "b"]) == ["a", "b"]


def test_printable_escapes_control_and_format_characters():
    assert errors.printable("a\x1b[31mb\x00c\u202ed\u2028 é\u00a0") == \
        "a\\x1b[31mb\\x00c\\u202ed\\u2028 é\u00a0"
