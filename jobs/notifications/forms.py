from django import forms

from jobs.notifications.models import Channel, EventName


class SubscriptionForm(forms.Form):
    channel = forms.ChoiceField(choices=Channel.choices[:2], initial=Channel.WEBHOOK, label="Send")
    url = forms.CharField(
        required=False, max_length=2000, label="Webhook URL", help_text="Where to POST; not needed for email."
    )
    events = forms.MultipleChoiceField(
        choices=EventName.choices,
        initial=[EventName.FINISHED],
        label="Events",
        widget=forms.CheckboxSelectMultiple,
    )
