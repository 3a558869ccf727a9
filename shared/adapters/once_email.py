"""Each email at most once per (event, recipient): an ``EmailSender`` in front of the real one that
goes through the outbox, keyed by the message's deterministic ``idempotency_key`` (which ACS also
receives as its operation id, and SMTP as the Message-ID).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.errors import TransientError
from shared.ports import Clock, EmailSender, Outbox, OutgoingEmail

logger = logging.getLogger(__name__)


class OnceEmailSender:
    def __init__(
        self, inner: EmailSender, outbox: Outbox, clock: Clock, lease: timedelta = timedelta(minutes=5)
    ) -> None:
        self._inner = inner
        self._outbox = outbox
        self._clock = clock
        self._lease = lease

    def send(self, message: OutgoingEmail) -> None:
        key = message.idempotency_key
        if key is None:
            self._inner.send(message)
            return
        notice = f"{key}:{message.to.lower()}"
        if not self._outbox.claim(notice, self._clock.now(), self._lease):
            logger.info("email %s to a recipient was already sent, or is being sent by another worker", key)
            return
        try:
            self._inner.send(message)
        except TransientError:
            self._outbox.release(notice)  # a retry sends it
            raise
        self._outbox.mark_sent(notice, self._clock.now())
