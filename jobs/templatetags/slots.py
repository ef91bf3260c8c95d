"""`{% slot "name" %}`: where feature apps add to the core's pages without the core naming them.

settings.BATCHSITE_TEMPLATE_SLOTS maps a slot name to the templates rendered there, in order, with
the page's context (e.g. {"batch_actions": ["schedules/slots/batch_actions.html"]}).
"""

from django import template
from django.conf import settings
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag(takes_context=True)
def slot(context: template.Context, name: str) -> str:
    names = getattr(settings, "BATCHSITE_TEMPLATE_SLOTS", {}).get(name, ())
    if not names or context.template is None:
        return ""
    engine = context.template.engine
    return mark_safe("".join(engine.get_template(path).render(context) for path in names))
