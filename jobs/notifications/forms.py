from django import forms

from jobs.notifications.models import SUBSCRIPTION_CHANNELS, Channel, EventName


class SubscriptionForm(forms.Form):
    channel = forms.ChoiceField(
        choices=[(c.value, c.label) for c in SUBSCRIPTION_CHANNELS], initial=Channel.WEBHOOK, label="Send"
    )
    url = forms.CharField(
        required=False,
        max_length=2000,
        label="URL",
        help_text="Where to POST: your webhook, or a Slack or Teams incoming-webhook URL; not needed for email.",
    )
    events = forms.MultipleChoiceField(
        choices=EventName.choices,
        initial=[EventName.FINISHED],
        label="Events",
        widget=forms.CheckboxSelectMultiple,
    )
