"""E-mail a job's result as a PNG attachment over SMTP (RFC 5321; STARTTLS RFC 3207; implicit TLS
RFC 8314), with the standard library's `smtplib` and `email.message.EmailMessage`.

Server, port, security (starttls | ssl | none), user, password and sender come from `Settings`
(`TOONBOOTH_SMTP_*`), never from code. Addresses are plain `local@domain` (core.specs.validate_email:
no display names, commas, CR/LF), subjects and file names are refused / reduced so that nothing a
user typed can add a header.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..core.errors import InputError, ToonboothError
from ..core.settings import Settings
from ..core.specs import validate_email

_FILENAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


class MailError(ToonboothError):
    """The SMTP server could not be reached or refused the message."""

    http_status = 502


def mail_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host and settings.smtp_from)


def build_message(
    settings: Settings, to: str, subject: str, body: str, attachment_png: bytes, filename: str
) -> EmailMessage:
    to_addr = validate_email(to, "email")
    if not to_addr:
        raise InputError("email", "an address is needed", to)
    sender = validate_email(settings.smtp_from, "smtp_from") if settings.smtp_from else None
    if not sender:
        raise MailError("e-mail is not configured: set TOONBOOTH_SMTP_HOST and TOONBOOTH_SMTP_FROM")
    if any(c in subject for c in "\r\n\x00"):
        raise InputError("subject", f"must be one line, got {subject[:80]!r}", subject)
    if not attachment_png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputError("attachment_png", "is not a PNG file", None)
    safe_name = _FILENAME_OK.sub("_", filename).strip("._") or "result"
    if not safe_name.lower().endswith(".png"):
        safe_name += ".png"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to_addr
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.split("@", 1)[1])
    msg.set_content(body)
    msg.add_attachment(attachment_png, maintype="image", subtype="png", filename=safe_name[:120])
    return msg


def send_result(
    settings: Settings, to: str, subject: str, body: str, attachment_png: bytes, filename: str
) -> None:
    """Send one mail with the PNG attached. InputError for a bad address; MailError when it fails."""
    msg = build_message(settings, to, subject, body, attachment_png, filename)
    host, port, timeout = settings.smtp_host, settings.smtp_port, settings.smtp_timeout_s
    assert host is not None
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    where = f"{host}:{port} ({settings.smtp_security})"
    try:
        if settings.smtp_security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if settings.smtp_security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, password or "")
            refused = smtp.send_message(msg)
        if refused:
            raise MailError(f"SMTP server {where} refused recipient(s): {', '.join(refused)}")
    except MailError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP login to {where} as {settings.smtp_user!r} failed ({exc.smtp_code})") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"sending to {to} via {where} failed: {type(exc).__name__}: {exc}") from None
