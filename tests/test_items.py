"""Items as people give them: labels or {label, params} objects, in JSON or CSV; `k=v` params.

Pure unit tests of jobs.items: no database, no Redis.
"""

import pytest

from jobs.errors import InvalidInput
from jobs.items import LABEL_MAX_LENGTH, Item, normalize_items, parse_items_text, parse_key_values, parse_value


def errors_of(call, *args, **kwargs) -> dict[str, list[str]]:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    return caught.value.errors


# --- normalize_items: the JSON-like shape shared by CLI, form and API ---------------------------


def test_plain_labels_become_items_without_params():
    assert normalize_items(["dim_customer", "fact_sales"]) == [Item("dim_customer"), Item("fact_sales")]


def test_objects_carry_their_label_and_params():
    raw = [{"label": "dim_customer", "params": {"duration_ms": 5, "mode": "full"}}, {"label": "fact_sales"}]
    assert normalize_items(raw) == [
        Item("dim_customer", {"duration_ms": 5, "mode": "full"}),
        Item("fact_sales", {}),
    ]


def test_labels_and_objects_can_be_mixed_in_one_list():
    items = normalize_items(["a", {"label": "b", "params": {"x": 1}}, "c"])
    assert [(item.label, item.params) for item in items] == [("a", {}), ("b", {"x": 1}), ("c", {})]


def test_null_params_mean_no_params():
    assert normalize_items([{"label": "a", "params": None}]) == [Item("a", {})]


@pytest.mark.parametrize("label, text", [(42, "42"), (0, "0"), (1.5, "1.5"), (-7, "-7")])
def test_numbers_are_accepted_as_labels_and_become_text(label, text):
    assert normalize_items([label]) == [Item(text)]
    assert normalize_items([{"label": label}]) == [Item(text)]


def test_labels_are_stripped_of_surrounding_blanks():
    assert normalize_items(["  a  ", {"label": "\tb\n"}]) == [Item("a"), Item("b")]


@pytest.mark.parametrize("label", ["", "   ", "\t\n", None, True, False, ["a"]])
def test_an_empty_or_non_text_label_is_refused_at_the_entry_path(label):
    errors = errors_of(normalize_items, ["ok", label])
    assert list(errors) == ["items[1]"]
    assert errors["items[1]"] == ["A non-empty text label is required."]


@pytest.mark.parametrize("entry", [{"label": ""}, {"label": "  "}, {"label": None}, {"params": {"x": 1}}, {}])
def test_an_empty_or_missing_label_in_an_object_is_refused_at_the_label_path(entry):
    errors = errors_of(normalize_items, ["ok", "fine", entry])
    assert list(errors) == ["items[2].label"]


def test_a_label_longer_than_the_column_is_refused():
    assert normalize_items(["x" * LABEL_MAX_LENGTH]) == [Item("x" * LABEL_MAX_LENGTH)]
    errors = errors_of(normalize_items, ["x" * (LABEL_MAX_LENGTH + 1)])
    assert errors == {"items[0].label": [f"At most {LABEL_MAX_LENGTH} characters."]}


@pytest.mark.parametrize("params", [[1, 2], "duration_ms=5", 5, True])
def test_params_that_are_not_an_object_are_refused_at_the_params_path(params):
    errors = errors_of(normalize_items, [{"label": "a", "params": params}])
    assert errors == {"items[0].params": ["Must be an object."]}


def test_unknown_keys_in_an_object_are_refused_and_named():
    errors = errors_of(normalize_items, ["a", {"label": "b", "parmas": {}, "colour": "red"}])
    assert list(errors) == ["items[1]"]
    assert "colour, parmas" in errors["items[1]"][0]


def test_every_bad_entry_is_reported_not_only_the_first():
    errors = errors_of(normalize_items, ["", "ok", {"label": "x", "params": 3}, {"label": " "}, {"bad": 1}])
    assert set(errors) == {"items[0]", "items[2].params", "items[3].label", "items[4]"}


@pytest.mark.parametrize("raw", [{"label": "a"}, "a,b", None, 3])
def test_something_other_than_a_list_is_refused(raw):
    assert list(errors_of(normalize_items, raw)) == ["items"]


def test_the_path_prefix_can_be_chosen_by_the_caller():
    assert list(errors_of(normalize_items, [""], path="body.items")) == ["body.items[0]"]


# --- parse_value and parse_key_values: `--param k=v` ------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("5", 5),
        ("-3", -3),
        ("0.25", 0.25),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("[1, 2]", [1, 2]),
        ('"quoted"', "quoted"),
        ("hello", "hello"),
        ("True", "True"),
        ("007", "007"),
        ("2024-01-31", "2024-01-31"),
        ("", ""),
        ("a b", "a b"),
    ],
)
def test_a_value_is_json_when_it_parses_and_text_otherwise(text, value):
    parsed = parse_value(text)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_words_stay_text(text):
    assert parse_value(text) == text


def test_key_values_are_parsed_into_a_dict():
    params = parse_key_values(["duration_ms=50", "failure_rate=0.5", "verbose=true", "mode=full", "seed=null"])
    assert params == {"duration_ms": 50, "failure_rate": 0.5, "verbose": True, "mode": "full", "seed": None}


def test_only_the_first_equals_sign_separates_key_and_value():
    assert parse_key_values(["query=a=b", "empty="]) == {"query": "a=b", "empty": ""}


def test_keys_are_stripped_and_a_later_pair_wins():
    assert parse_key_values([" x =1", "x=2"]) == {"x": 2}


def test_no_pairs_give_empty_params():
    assert parse_key_values([]) == {}


@pytest.mark.parametrize("pair", ["duration_ms", "=5", "  =5", ""])
def test_a_pair_without_key_or_equals_sign_is_refused(pair):
    errors = errors_of(parse_key_values, ["ok=1", pair])
    assert list(errors) == ["params"]
    assert repr(pair) in errors["params"][0]


def test_the_key_value_error_path_can_be_chosen():
    assert list(errors_of(parse_key_values, ["nope"], path="base")) == ["base"]


# --- parse_items_text: JSON files ---------------------------------------------------------------


def test_a_json_file_of_labels_and_objects_is_parsed():
    text = '["dim_customer", {"label": "fact_sales", "params": {"duration_ms": 10}}, 7]'
    assert parse_items_text(text, "items.json") == [
        Item("dim_customer"),
        Item("fact_sales", {"duration_ms": 10}),
        Item("7"),
    ]


def test_a_json_array_is_recognised_without_a_json_file_name():
    text = '\n  ["a", "b"]\n'
    assert parse_items_text(text, "items.txt") == [Item("a"), Item("b")]
    assert parse_items_text(text) == [Item("a"), Item("b")]


def test_a_json_file_name_is_recognised_whatever_its_case():
    errors = errors_of(parse_items_text, "label\na\n", "ITEMS.JSON")
    assert errors["items"][0].startswith("Not valid JSON: ")


def test_invalid_json_says_so_with_the_parser_message():
    errors = errors_of(parse_items_text, '["a", "b",', "items.json")
    assert list(errors) == ["items"]
    message = errors["items"][0]
    assert message.startswith("Not valid JSON: ")
    assert "line 1 column" in message


def test_a_json_value_that_is_not_a_list_is_refused():
    errors = errors_of(parse_items_text, '{"label": "a"}', "items.json")
    assert errors == {"items": ["Must be a list of labels or {label, params} objects."]}


def test_entry_errors_of_a_json_file_carry_their_index():
    errors = errors_of(parse_items_text, '["a", "", {"label": "c", "params": [1]}]', "items.json")
    assert set(errors) == {"items[1]", "items[2].params"}


def test_an_empty_json_array_gives_no_items():
    assert parse_items_text("[]", "items.json") == []


# --- parse_items_text: CSV files ----------------------------------------------------------------


def test_a_csv_label_column_gives_the_labels():
    assert parse_items_text("label\ndim_customer\nfact_sales\n", "items.csv") == [
        Item("dim_customer"),
        Item("fact_sales"),
    ]


def test_other_csv_columns_become_params_parsed_as_values():
    text = "label,duration_ms,failure_rate,dry_run,mode,code\nload_a,50,0.5,true,full,007\nload_b,10,0,false,delta,x1\n"
    assert parse_items_text(text, "items.csv") == [
        Item("load_a", {"duration_ms": 50, "failure_rate": 0.5, "dry_run": True, "mode": "full", "code": "007"}),
        Item("load_b", {"duration_ms": 10, "failure_rate": 0, "dry_run": False, "mode": "delta", "code": "x1"}),
    ]


def test_the_label_column_need_not_be_first_and_is_never_parsed_as_a_value():
    items = parse_items_text("mode,label\nfull,42\ndelta,true\n", "items.csv")
    assert items == [Item("42", {"mode": "full"}), Item("true", {"mode": "delta"})]
    assert all(isinstance(item.label, str) for item in items)


def test_empty_csv_cells_are_left_out_of_the_params():
    items = parse_items_text("label,duration_ms,mode\na,,full\nb,5,\nc\n", "items.csv")
    assert items == [Item("a", {"mode": "full"}), Item("b", {"duration_ms": 5}), Item("c", {})]


def test_csv_headers_and_cells_are_stripped():
    items = parse_items_text(" label , duration_ms \n  a  ,  5 \n", "items.csv")
    assert items == [Item("a", {"duration_ms": 5})]


def test_quoted_csv_cells_keep_their_commas():
    assert parse_items_text('label,note\n"a, the first","x, y"\n', "items.csv") == [
        Item("a, the first", {"note": "x, y"})
    ]


def test_a_csv_without_a_label_column_is_refused():
    errors = errors_of(parse_items_text, "name,duration_ms\na,5\n", "items.csv")
    assert errors == {"items": ["A CSV items file needs a 'label' column (or give a JSON array)."]}


def test_a_csv_label_header_is_case_sensitive():
    assert list(errors_of(parse_items_text, "Label\na\n", "items.csv")) == ["items"]


def test_a_csv_row_with_a_blank_label_is_refused_at_its_label_path():
    errors = errors_of(parse_items_text, "label,x\na,1\n ,2\nc,3\n", "items.csv")
    assert list(errors) == ["items[1].label"]


def test_a_csv_with_only_a_header_gives_no_items():
    assert parse_items_text("label,duration_ms\n", "items.csv") == []


def test_a_file_without_a_name_that_is_not_json_is_read_as_csv():
    assert parse_items_text("label\na\n") == [Item("a")]


def test_a_csv_row_with_more_cells_than_headers_is_refused_as_invalid_input():
    errors = errors_of(parse_items_text, "label,duration_ms\na,5\nb,5,extra\n", "items.csv")
    assert any(path.startswith("items") for path in errors)


# --- parse_items_text: what every file format shares ---------------------------------------------


@pytest.mark.parametrize(
    "text, filename",
    [
        ('\ufeff["a", "b"]', "items.json"),
        ('\ufeff  ["a", "b"]', "items.txt"),
        ("\ufefflabel\na\nb\n", "items.csv"),
        ("\ufefflabel\r\na\r\nb\r\n", "items.csv"),
    ],
)
def test_a_byte_order_mark_is_ignored(text, filename):
    assert parse_items_text(text, filename) == [Item("a"), Item("b")]


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "\ufeff", "\ufeff \n"])
@pytest.mark.parametrize("filename", ["items.json", "items.csv", ""])
def test_an_empty_file_is_refused(text, filename):
    assert errors_of(parse_items_text, text, filename) == {"items": ["The items file is empty."]}


def test_the_items_file_path_can_be_chosen():
    assert list(errors_of(parse_items_text, "", "f.csv", path="upload")) == ["upload"]
    assert list(errors_of(parse_items_text, '[""]', "f.json", path="upload")) == ["upload[0]"]
