"""Operation types written as typed functions: the form, the params' validation and the API schema
come from the annotations, the CLI's --param and the pages work with them, real workers call the
function with its arguments; a hand-written form keeps working beside them."""

import json

import pytest
from django import forms
from django.core.management import CommandError, call_command

import tests.typed_optypes  # noqa: F401  (registers the typed types in this process)
from jobs import services
from jobs.errors import InvalidInput
from jobs.models import Batch
from jobs.optypes import all_types, get_type, operation_type
from tests.conftest import run_operation
from tests.test_api import ApiClient
from tests.test_engine import wait_until_finished
from tests.test_views import as_alice  # noqa: F401,F811  (fixture)


def test_the_form_comes_from_the_annotations_with_limits_defaults_and_help():
    fields = get_type("typed.resize").form.base_fields
    width = fields["width"]
    assert isinstance(width, forms.IntegerField)
    assert (width.min_value, width.max_value, width.initial, width.required) == (1, 4000, 800, False)
    assert (width.label, width.help_text) == ("Width", "Pixels across.")
    assert isinstance(fields["fit"], forms.ChoiceField) and [c for c, _ in fields["fit"].choices] == [
        "cover",
        "contain",
    ]
    assert fields["quality"].label == "JPEG quality" and isinstance(fields["quality"], forms.FloatField)
    assert fields["suffix"].max_length == 10
    assert isinstance(fields["sharpen"], forms.BooleanField) and not fields["sharpen"].required
    assert isinstance(fields["tags"], forms.JSONField) and not fields["tags"].required
    assert isinstance(fields["token"].widget, forms.PasswordInput)


def test_params_are_filled_with_defaults_and_checked_by_form_and_model():
    resize = get_type("typed.resize")
    assert resize.clean_params({"width": "120"}) == {
        "width": 120,
        "fit": "cover",
        "quality": 0.8,
        "suffix": "small",
        "sharpen": False,
        "token": "",
    }
    with pytest.raises(InvalidInput) as error:
        resize.clean_params({"width": 0, "fit": "stretch", "suffix": "ABC", "quality": 0, "colour": "red"})
    assert set(error.value.errors) == {"params", "params.width", "params.fit", "params.suffix", "params.quality"}
    assert "colour" in error.value.errors["params"][0]
    assert "greater than or equal to 1" in error.value.errors["params.width"][0]
    # The pattern only the model knows, reported at its field like the form's own errors.
    with pytest.raises(InvalidInput) as error:
        resize.clean_params({"suffix": "ABC"})
    assert list(error.value.errors) == ["params.suffix"] and "pattern" in error.value.errors["params.suffix"][0]


def test_one_model_parameter_validates_nested_fields_with_their_path():
    thumbnail = get_type("typed.thumbnail")
    assert thumbnail.clean_params({"name": "t"}) == {"size": {"width": 64, "height": 64}, "name": "t"}
    with pytest.raises(InvalidInput) as error:
        thumbnail.clean_params({"size": {"width": 0, "height": 5}})
    assert set(error.value.errors) == {"params.name", "params.size.width"}


def test_the_function_is_called_with_its_arguments_and_the_context():
    assert run_operation("typed.resize", "cat.png", width=50, tags=["a"], token="abc") == {
        "width": 50,
        "fit": "cover",
        "quality": 0.8,
        "suffix": "small",
        "sharpen": False,
        "tags": ["a"],
        "token_length": 3,
    }
    assert run_operation("typed.thumbnail", name="x", size={"width": 2, "height": 3}) == {
        "size": {"width": 2, "height": 3},
        "name": "x",
    }
    assert run_operation("typed.greet", "Ada", times=2) == {"text": "Hello, Ada! Hello, Ada!"}


def test_a_parameter_that_cannot_be_one_is_refused_at_registration():
    with pytest.raises(TypeError, match="not both"):

        @operation_type(key="typed.broken")
        def broken(ctx, options: tests.typed_optypes.Greeting, extra: int = 1) -> None: ...


def test_the_api_lists_each_typed_type_with_its_params_schema(alice):
    listed = {t["key"]: t for t in ApiClient(alice).get("/api/operation-types").json()}
    schema = listed["typed.resize"]["params_schema"]
    assert schema["properties"]["width"] == {
        "default": 800,
        "description": "Pixels across.",
        "maximum": 4000,
        "minimum": 1,
        "title": "Width",
        "type": "integer",
    }
    assert schema["properties"]["fit"]["enum"] == ["cover", "contain"]
    assert schema["properties"]["token"]["writeOnly"] is True and schema["additionalProperties"] is False
    assert listed["typed.resize"]["description"] == "Resizes each image (pretends to)."
    # A hand-written form's type gets one too, from its fields.
    sql = listed["demo.sleep"]["params_schema"]["properties"]["duration_ms"]
    assert (sql["type"], sql["minimum"], sql["maximum"]) == ("integer", 0, 3_600_000)


def test_the_openapi_document_holds_each_types_params_schema_with_nested_models(alice):
    components = ApiClient(alice).get("/api/openapi.json").json()["components"]["schemas"]
    assert components["Params.typed.resize"]["properties"]["width"]["maximum"] == 4000
    size_ref = components["Params.typed.thumbnail"]["properties"]["size"]["$ref"]
    assert size_ref == "#/components/schemas/Params.typed.thumbnail.Size"
    assert components["Params.typed.thumbnail.Size"]["required"] == ["width", "height"]
    assert "Params.demo.sleep" in components and "Params.noop" in components


def test_the_api_refuses_bad_params_of_a_typed_type_by_field_path(alice):
    response = ApiClient(alice).post(
        "/api/batches", {"type": "typed.resize", "name": "r", "items": ["a"], "params": {"width": 9000}}
    )
    assert response.status_code == 422
    assert "params.width" in response.json()["errors"] and Batch.objects.count() == 0


def test_the_create_page_shows_the_derived_form_and_creates_the_batch(as_alice, alice):  # noqa: F811
    page = as_alice.get("/batches/new/typed.resize/").content.decode()
    assert ">JPEG quality</label>" in page and 'name="params-width"' in page and 'type="password"' in page
    form = {
        "name": "from the page",
        "items": "a.png\nb.png",
        "params-width": "300",
        "params-fit": "contain",
        "params-quality": "0.5",
        "params-suffix": "x",
        "params-tags": '["t"]',
        "params-token": "s3cret",
        "max_parallel": "4",
        "max_retries": "0",
        "retry_backoff_s": "1",
        "timeout_s": "300",
        "priority": "default",
    }
    response = as_alice.post("/batches/new/typed.resize/", form)
    batch = Batch.objects.get(name="from the page")
    assert response.status_code == 302
    assert {k: batch.params[k] for k in ("width", "fit", "quality", "tags")} == {
        "width": 300,
        "fit": "contain",
        "quality": 0.5,
        "tags": ["t"],
    }
    # The secret is stored encrypted, not as typed.
    assert batch.params["token"] != "s3cret"
    bad = as_alice.post("/batches/new/typed.resize/", {**form, "name": "bad", "params-suffix": "UP"})
    assert bad.status_code == 422 and 'id="id_params-suffix_error"' in bad.content.decode()


def test_the_command_line_has_a_flag_per_param_beside_param(alice, staff):
    call_command(
        "batch",
        "create",
        "--type",
        "typed.resize",
        "--item",
        "a",
        "--width",
        "64",
        "--tags",
        '["x"]',
        "--sharpen",
        "true",
    )
    batch = Batch.objects.get()
    assert (batch.params["width"], batch.params["tags"], batch.params["sharpen"]) == (64, ["x"], True)
    # A flag of another type's param is refused by this type, as --param would be.
    with pytest.raises(CommandError) as error:
        call_command("batch", "create", "--type", "typed.resize", "--item", "a", "--duration-ms", "5")
    assert error.value.returncode == 2 and "duration_ms" in str(error.value)


def test_the_command_line_params_work_for_a_typed_type(alice, staff, capsys):
    call_command(
        "batch", "create", "--type", "typed.resize", "--item", "a", "--param", "width=64", "--param", "fit=contain"
    )
    batch = Batch.objects.get()
    assert (batch.params["width"], batch.params["fit"]) == (64, "contain")
    with pytest.raises(CommandError) as error:
        call_command("batch", "create", "--type", "typed.resize", "--item", "a", "--param", "width=0")
    assert error.value.returncode == 2 and "params.width" in str(error.value)


@pytest.mark.workers
def test_typed_types_run_end_to_end_on_real_workers(alice, workers):
    workers.env["BATCHSITE_OPERATION_TYPES"] = "tests.typed_optypes"
    workers.start(1)
    batch = services.batch_create(
        owner=alice,
        type="typed.resize",
        name="resize",
        items=["a.png", {"label": "b.png", "params": {"width": 10}}],
        params={"token": "abcd", "sharpen": True},
    )
    wait_until_finished(batch)
    assert batch.status == "completed"
    results = {op.label: op.result for op in batch.operations.all()}
    assert results["a.png"]["width"] == 800 and results["b.png"]["width"] == 10
    assert results["a.png"]["token_length"] == 4 and results["a.png"]["sharpen"] is True
    greet = services.batch_create(owner=alice, type="typed.greet", name="g", items=["Ada"], params={"times": 2})
    wait_until_finished(greet)
    assert [op.result for op in greet.operations.all()] == [{"text": "Hello, Ada! Hello, Ada!"}]
    assert json.loads(json.dumps(batch.params))["token"] != "abcd"


def test_each_type_has_a_docs_page_with_its_params_schema_and_examples(as_alice):  # noqa: F811
    page = as_alice.get("/types/typed.resize/")
    content = page.content.decode()
    assert page.status_code == 200
    assert 'id="param-width"' in content and "≤ 4000" in content and "Pixels across." in content
    assert "(secret)" in content and "cover, contain" in content and "matches <code>^[a-z]*$</code>" in content
    assert "--type typed.resize --item &#x27;first item&#x27; --width 800" in content
    assert "Params.typed.resize" in content and "&quot;additionalProperties&quot;: false" in content
    assert 'href="/types/typed.resize/"' in as_alice.get("/batches/new/").content.decode()
    for optype in all_types():
        assert as_alice.get(f"/types/{optype.key}/").status_code == 200, optype.key
    assert as_alice.get("/types/no.such.type/").status_code == 404


def test_a_secret_marked_in_the_annotation_is_masked_by_the_api(alice):
    api = ApiClient(alice)
    created = api.post(
        "/api/batches", {"type": "typed.resize", "name": "s", "items": ["a"], "params": {"token": "s3cret"}}
    )
    assert created.status_code == 201, created.content
    shown = api.get(f"/api/batches/{created.json()['id']}").json()
    assert shown["params"]["token"] == "***" and "s3cret" not in json.dumps(shown)
    assert get_type("typed.resize").secret_params == ("token",)
