"""Commands whose output goes into a pipe that closes early (`batch list | head`) end quietly."""

import os
import sys

from django.core.management.base import BaseCommand

from jobs.audit.models import Surface
from jobs.audit.recorder import acting_as


class QuietPipeCommand(BaseCommand):
    """A BaseCommand whose closed standard output ends it with exit code 141 (128 + SIGPIPE, as a
    shell tool killed by the signal) and no traceback."""

    BROKEN_PIPE_EXIT = 141

    def execute(self, *args, **options):
        try:
            with acting_as(Surface.CLI):
                output = super().execute(*args, **options)
            self.stdout.flush()
            return output
        except BrokenPipeError:
            # Python flushes stdout again at exit and would print the same error there: point the
            # descriptor at /dev/null first (the recipe of Python's signal module documentation).
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):  # no real descriptor (tests pass a StringIO)
                pass
            raise SystemExit(self.BROKEN_PIPE_EXIT) from None
