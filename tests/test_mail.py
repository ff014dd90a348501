"""E-mail delivery against a real SMTP server on loopback (aiosmtpd Controller)."""

from __future__ import annotations

import email
import email.policy
import io
import socket

import pytest
from PIL import Image

from toonbooth.core.errors import InputError
from toonbooth.core.settings import Settings
from toonbooth.core.specs import AvatarSpec
from toonbooth.runtime.mail import MailError, send_result
from toonbooth.runtime.service import Service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    def __init__(self):
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                email.message_from_bytes(envelope.content, policy=email.policy.default),
            )
        )
        return "250 OK"


@pytest.fixture()
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"mailer" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    inbox = Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    yield inbox, controller.port
    controller.stop()


def mail_settings(tmp_path, port: int, **kw) -> Settings:
    values = dict(
        home=tmp_path / "home",
        data_dir=tmp_path / "data",
        device="cpu",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_from="booth@example.org",
        smtp_timeout_s=5,
    )
    values.update(kw)
    return Settings(**values)


def png(size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (9, 99, 199)).save(buf, "PNG")
    return buf.getvalue()


def test_send_result_attaches_the_png(tmp_path, smtp_server):
    inbox, port = smtp_server
    settings = mail_settings(tmp_path, port, smtp_user="mailer", smtp_password="s3cret")
    send_result(settings, "ann@example.com", "Your avatar", "Here it is.", png(), "my avatar/../x.png")
    ((sender, rcpts, msg),) = inbox.messages
    assert sender == "booth@example.org" and rcpts == ["ann@example.com"]
    assert msg["Subject"] == "Your avatar" and msg["To"] == "ann@example.com"
    parts = list(msg.iter_attachments())
    assert len(parts) == 1 and parts[0].get_content_type() == "image/png"
    assert parts[0].get_filename() == "my_avatar_.._x.png"  # no path separators survive
    assert parts[0].get_content() == png()
    assert "Here it is." in msg.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.com\r\nBcc: evil@example.com",
        "Ann <ann@example.com>",
        "a@example.com,b@example.com",
        "no-at-sign",
        "ann@localhost",
    ],
)
def test_header_injection_and_display_names_are_refused(tmp_path, smtp_server, address):
    inbox, port = smtp_server
    with pytest.raises(InputError, match="`email`"):
        send_result(mail_settings(tmp_path, port), address, "s", "b", png(), "a.png")
    with pytest.raises(InputError, match="`subject`"):
        send_result(mail_settings(tmp_path, port), "ann@example.com", "hi\nBcc: x@y.z", "b", png(), "a.png")
    assert inbox.messages == []


def test_bad_login_and_unreachable_server_raise_mail_error(tmp_path, smtp_server):
    _, port = smtp_server
    with pytest.raises(MailError, match="login") as exc:
        send_result(
            mail_settings(tmp_path, port, smtp_user="mailer", smtp_password="wrong-pw"),
            "ann@example.com",
            "s",
            "b",
            png(),
            "a.png",
        )
    assert "wrong-pw" not in str(exc.value)
    with pytest.raises(MailError, match="ConnectionRefused"):
        send_result(mail_settings(tmp_path, free_port()), "ann@example.com", "s", "b", png(), "a.png")


def _photo(path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((64, 64)).save(buf, "PNG")
    return buf.getvalue()


def test_job_result_is_mailed(tmp_path, smtp_server, sample_photo_path):
    inbox, port = smtp_server
    with Service(mail_settings(tmp_path, port)) as svc:
        ref = svc.put_upload(_photo(sample_photo_path), "alice")
        job = svc.submit(AvatarSpec(image=ref, backend="classic", email="ann@example.com"), "alice")
        rec = svc.wait(job.id, "alice", timeout=60)
        assert (
            rec.state == "completed"
            and rec.delivery["status"] == "sent"
            and rec.delivery["to"] == "ann@example.com"
        )
        ((_, rcpts, msg),) = inbox.messages
        assert rcpts == ["ann@example.com"]
        (part,) = msg.iter_attachments()
        assert part.get_content() == svc.read_output(job.id, "alice", "avatar")
        logs = [e.message for _, e in svc.events(job.id, "alice") if e.type == "log"]
        assert "result e-mailed to ann@example.com" in logs


def test_failed_delivery_keeps_the_completed_job(tmp_path, sample_photo_path):
    with Service(mail_settings(tmp_path, free_port())) as svc:  # nobody listens on this port
        ref = svc.put_upload(_photo(sample_photo_path), "alice")
        job = svc.submit(AvatarSpec(image=ref, backend="classic", email="ann@example.com"), "alice")
        rec = svc.wait(job.id, "alice", timeout=60)
        assert rec.state == "completed" and rec.output is not None
        assert rec.delivery["status"] == "failed" and "ConnectionRefused" in rec.delivery["error"]
        assert svc.read_output(job.id, "alice", "avatar")[:4] == b"\x89PNG"
