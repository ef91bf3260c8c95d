"""Database instances on the batch page: what a limited batch waits for."""

from django import template

from jobs import selectors
from jobs.models import Batch

register = template.Library()


@register.simple_tag
def instance_waits(batch: Batch) -> list[str]:
    """The instances at their max_connections that hold up this batch's pending operations."""
    if not batch.instance_limited or not batch.is_active:
        return []
    return selectors.instance_waits(batch)
