"""`/api/instances`: database instances. The URL is write-only: answers show it masked.

Visibility: your own instances and the shared ones (staff: all); another user's unshared instance
is a 404, a shared one you do not own is a 403 to change.
"""

from django.db import transaction
from ninja import Query, Router
from ninja.responses import Status

from jobs import selectors, services
from jobs.api.schemas import Error, InstanceImportIn, InstanceIn, InstanceList, InstanceOut, InstancePatch, InstanceTest
from jobs.errors import InvalidInput
from jobs.nul import NO_NUL_PATTERN

router = Router(tags=["instances"])
ERRORS = {401: Error, 404: Error}
INPUT_ERRORS = {400: Error, 422: Error}
NAME = r"{name}"


def instance_out(instance) -> dict:
    return selectors.instance_rows([instance])[0]


@router.get("", response={200: InstanceList, **INPUT_ERRORS, **ERRORS}, summary="List the instances you may use")
def list_instances(
    request,
    tag: str = Query("", max_length=50, pattern=NO_NUL_PATTERN, description="Only instances with this tag."),
    region: str = Query("", max_length=100, pattern=NO_NUL_PATTERN, description="Only instances of this region."),
    q: str = Query("", max_length=100, pattern=NO_NUL_PATTERN, description="Text in the name (case-insensitive)."),
):
    found = list(selectors.instances_visible_to(request.user, text=q[:100], tag=tag[:50], region=region[:100]))
    return {"items": selectors.instance_rows(found), "count": len(found)}


@router.post("", response={201: InstanceOut, **INPUT_ERRORS, **ERRORS}, summary="Register an instance")
def create_instance(request, payload: InstanceIn):
    instance = services.instance_create(**payload.dict(), owner=request.user, by=request.user)
    return Status(201, instance_out(instance))


@router.post(
    "/import",
    response={201: InstanceList, **INPUT_ERRORS, **ERRORS},
    summary="Register many instances at once (all or none)",
)
def import_instances(request, payload: InstanceImportIn):
    """`rows` (objects) or `csv` (text with a header). Any bad row is a 422 naming it
    (`rows[3].url`) and nothing is imported."""
    if (payload.rows is None) == (payload.csv is None):
        raise InvalidInput({"body": ["Give either rows or csv."]})
    rows = payload.rows if payload.rows is not None else services.parse_instances_file(payload.csv or "", "import.csv")
    created = services.instances_import(rows=rows, owner=request.user, by=request.user, team=payload.team)
    return Status(201, {"items": selectors.instance_rows(created), "count": len(created)})


@router.get("/{name}", response={200: InstanceOut, **ERRORS}, summary="One instance")
def get_instance(request, name: str):
    return instance_out(selectors.instance_get_visible(request.user, name))


@router.patch(
    "/{name}", response={200: InstanceOut, 403: Error, **INPUT_ERRORS, **ERRORS}, summary="Change an instance"
)
def update_instance(request, name: str, payload: InstancePatch):
    instance = selectors.instance_get_editable(request.user, name)
    changes = payload.dict(exclude_unset=True)
    if changes.get("shared") is None:
        changes.pop("shared", None)
    with transaction.atomic():
        instance = services.instance_update(instance=instance, by=request.user, **changes)
    return instance_out(instance)


@router.delete("/{name}", response={204: None, 403: Error, **ERRORS}, summary="Remove an instance")
def delete_instance(request, name: str):
    services.instance_remove(name=selectors.instance_get_editable(request.user, name).name)
    return Status(204, None)


@router.post("/{name}/test", response={200: InstanceTest, **ERRORS}, summary="Test the connection")
def test_instance(request, name: str):
    """Connect, run SELECT 1, and warn when the role can write or is a superuser; kept as the
    instance's last test."""
    instance = selectors.instance_get_visible(request.user, name, "operate")
    check = services.instance_test_connection(instance=instance)
    return {
        "ok": check.ok,
        "message": check.message,
        "elapsed_ms": check.elapsed_ms,
        "at": instance.last_tested_at,
        "warnings": list(check.warnings),
    }
