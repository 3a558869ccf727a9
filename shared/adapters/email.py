"""Email adapters: Azure Communication Services in Azure, SMTP locally (or to a relay)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import make_msgid

from azure.communication.email import EmailClient
from azure.core.exceptions import AzureError

from shared.errors import EmailUnavailable
from shared.ports import OutgoingEmail


class SmtpEmailSender:
    def __init__(self, host: str, port: int, sender: str, timeout: float = 30.0) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout = timeout

    def send(self, message: OutgoingEmail) -> None:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        domain = self._sender.rsplit("@", 1)[-1]
        # The same event gives the same Message-ID: a repeat, if one ever slips through, is recognisable.
        mail["Message-ID"] = (
            f"<{message.idempotency_key}@{domain}>" if message.idempotency_key else make_msgid(domain=domain)
        )
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise EmailUnavailable(
                f"the SMTP server at {self._host}:{self._port} did not take the email ({type(exc).__name__})"
            ) from exc


class AcsEmailSender:
    """Azure Communication Services Email. ``operation_id`` makes a retried send repeatable:
    ACS does not send twice for the same id."""

    def __init__(self, client: EmailClient, sender: str, polling_interval: float = 2.0) -> None:
        self._client = client
        self._sender = sender
        self._polling_interval = polling_interval

    def send(self, message: OutgoingEmail) -> None:
        payload = {
            "senderAddress": self._sender,
            "recipients": {"to": [{"address": message.to}]},
            "content": {"subject": message.subject, "plainText": message.text, "html": message.html},
        }
        try:
            poller = self._client.begin_send(
                payload, operation_id=message.idempotency_key, polling_interval=self._polling_interval
            )
            result = poller.result()
        except AzureError as exc:
            raise EmailUnavailable(
                f"Azure Communication Services did not take the email ({type(exc).__name__})"
            ) from exc
        status = str(result.get("status", "")).lower()
        if status != "succeeded":
            raise EmailUnavailable(f"Azure Communication Services reported the email as {status or 'unknown'}")
