"""What the live workers can run, for the pages."""

import logging

from django import template

from jobs.engine import dispatch

register = template.Library()
logger = logging.getLogger(__name__)


@register.simple_tag
def worker_capacity() -> int | None:
    """Operations the live workers can run at once together; None when Redis cannot say."""
    try:
        return dispatch.worker_capacity()
    except Exception:
        logger.warning("worker capacity unavailable", exc_info=True)
        return None
