"""Notifications: signed webhooks, emails and Python hooks when batches finish or fail.

A Django app the core never imports. It reads the BatchEvent rows the core writes (an outbox),
claims each one exactly once, fans it out to deliveries, and a tick in every RQ worker delivers
them, with retries timed by a due-at column rather than by a sleeping worker.
"""
