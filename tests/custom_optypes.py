"""Operation types registered the way a project registers its own (README, "Your own operation
types"). The tests import this module themselves and name it in BATCHSITE_OPERATION_TYPES for the
worker processes they start."""

from django import forms

from jobs.optypes.base import PermanentFailure, Reschedule, operation_type


class GreetForm(forms.Form):
    greeting = forms.CharField(max_length=50, initial="Hello", label="Greeting")
    shout = forms.BooleanField(required=False, initial=False, label="Shout")


@operation_type(
    key="example.greet",
    label="Example: greet",
    form=GreetForm,
    description="Greets each item; a result row per item.",
    items_help="One name per line.",
)
def greet(ctx) -> dict:
    if ctx.label == "nobody":
        raise PermanentFailure("Nobody to greet.", "NoName")
    text = f"{ctx.params['greeting']}, {ctx.label}!"
    if ctx.params["shout"]:
        text = text.upper()
    ctx.add_rows([{"name": ctx.label, "text": text}])
    return {"text": text}


class CountdownForm(forms.Form):
    runs = forms.IntegerField(min_value=1, max_value=100, initial=3, label="Runs")
    wait_s = forms.FloatField(min_value=0, initial=0, label="Wait between runs (s)")


@operation_type(key="example.countdown", label="Example: countdown", form=CountdownForm)
def countdown(ctx) -> dict:
    """Runs `runs` times, rescheduling itself in between, and reports what each run saw."""
    seen = (ctx.state or {}).get("seen", []) + [ctx.attempt]
    if len(seen) < ctx.params["runs"]:
        raise Reschedule(ctx.params["wait_s"], {"seen": seen})
    return {"seen": seen}


@operation_type(key="example.bad_state", label="Example: bad state", form=forms.Form)
def bad_state(ctx) -> None:
    raise Reschedule(0, {"when": object()})
