"""`/api/limits`: named limits, shared by every batch and worker. Everyone signed in reads them
(an operation's batch page says which one it waits for); staff change them."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from ninja import Router
from ninja.responses import Status

from jobs import services
from jobs.api.schemas import Error, LimitIn, LimitList, LimitOut, LimitPatch

router = Router(tags=["limits"])
ERRORS = {401: Error, 404: Error}
INPUT_ERRORS = {400: Error, 422: Error}
WRITE_ERRORS = {403: Error, **INPUT_ERRORS, **ERRORS}


def _staff(request) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Staff only: limits hold for every user's batches.")


@router.get("", response={200: LimitList, **ERRORS}, summary="List the limits")
def list_limits(request):
    """Limit rows and the instances' max_connections (as `instance:<name>`, `source` instance)."""
    rows = services.limits_list()
    return {"items": rows, "count": len(rows)}


@router.post("", response={201: LimitOut, **WRITE_ERRORS}, summary="Create or replace a limit")
def create_limit(request, payload: LimitIn):
    _staff(request)
    values = payload.dict()
    key = values.pop("key")
    return Status(201, services.limit_set(key=key, values=values))


@router.get("/{key}", response={200: LimitOut, **ERRORS}, summary="One limit")
def get_limit(request, key: str):
    found = services.limit_view(key)
    if not found:
        raise Http404(f"No limit {key!r}.")
    return found


@router.api_operation(["PUT", "PATCH"], "/{key}", response={200: LimitOut, **WRITE_ERRORS}, summary="Change a limit")
def change_limit(request, key: str, payload: LimitPatch):
    """Fields not given keep their value; null removes a concurrency or a rate."""
    _staff(request)
    if not services.limit_view(key) and not key.startswith(services.INSTANCE_PREFIX):
        raise Http404(f"No limit {key!r}.")
    return services.limit_set(key=key, values=payload.dict(exclude_unset=True))


@router.delete("/{key}", response={204: None, 403: Error, **ERRORS}, summary="Remove a limit")
def delete_limit(request, key: str):
    _staff(request)
    if not services.limit_remove(key=key):
        raise Http404(f"No limit {key!r}.")
    return Status(204, None)
