"""Templates and schedules: saved batch definitions, run with overrides, on a cron.

A feature app over the core: it calls `jobs.services` to create batches and is never imported by
the core. Its tick (`jobs.schedules.tick.run`) is called by every worker through the
`BATCHSITE_WORKER_TICKS` setting.
"""
