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

from ..core.artifacts import extension_for
from ..core.errors import InputError, ToonboothError
from ..core.settings import Settings
from ..core.specs import validate_email

_FILENAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


class MailError(ToonboothError):
    """The SMTP server could not be reached or refused the message."""

    http_status = 502


def mail_configured(settings: Settings) -> bool:
    return bool(settings.smtp_host and settings.smtp_from)


# what a result attachment may be, and the magic bytes it must start with
ATTACHMENT_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
    "video/mp4": (b"ftyp",),  # at offset 4
}


def _matches(data: bytes, media_type: str) -> bool:
    if media_type == "video/mp4":
        return data[4:8] == b"ftyp"
    if media_type == "image/webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return any(data.startswith(m) for m in ATTACHMENT_MAGIC.get(media_type, ()))


def build_message(
    settings: Settings, to: str, subject: str, body: str, attachment: bytes, filename: str,
    media_type: str = "image/png",
) -> EmailMessage:  # fmt: skip
    to_addr = validate_email(to, "email")
    if not to_addr:
        raise InputError("email", "an address is needed", to)
    sender = validate_email(settings.smtp_from, "smtp_from") if settings.smtp_from else None
    if not sender:
        raise MailError("e-mail is not configured: set TOONBOOTH_SMTP_HOST and TOONBOOTH_SMTP_FROM")
    if any(c in subject for c in "\r\n\x00"):
        raise InputError("subject", f"must be one line, got {subject[:80]!r}", subject)
    if media_type not in ATTACHMENT_MAGIC:
        raise InputError("media_type", f"must be one of {sorted(ATTACHMENT_MAGIC)}, got {media_type!r}", media_type)
    if not _matches(attachment, media_type):
        raise InputError("attachment", f"is not a {media_type} file", None)
    ext = extension_for(media_type)
    safe_name = _FILENAME_OK.sub("_", filename).strip("._") or "result"
    if not safe_name.lower().endswith(ext):
        safe_name += ext
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to_addr
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.split("@", 1)[1])
    msg.set_content(body)
    maintype, subtype = media_type.split("/", 1)
    msg.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=safe_name[:120])
    return msg


def send_result(
    settings: Settings, to: str, subject: str, body: str, attachment: bytes, filename: str,
    media_type: str = "image/png",
) -> None:  # fmt: skip
    """Send one mail with the result attached (PNG, MP4, WebP or GIF). InputError for a bad address or
    attachment; MailError when sending fails."""
    msg = build_message(settings, to, subject, body, attachment, filename, media_type)
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
