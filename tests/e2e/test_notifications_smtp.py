"""Notification e-mails end to end, through a real SMTP server (aiosmtpd on loopback), on SQLite and PostgreSQL.

A signed webhook is processed by the real model and routed by real rules; the batcher and the delivery runner
(`InlineRunner.settle`, after the test's clock has moved past the batching window) hand the message to the SMTP
server, which records what it accepted (and every DATA it was offered, with what it answered). STARTTLS is tested
against a self-signed certificate made in the test that the process trusts through SSL_CERT_FILE (as a deployment
trusts a private CA): `ssl.create_default_context()` in the Smtp endpoint reads it, so no code path is bypassed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import html
import ipaddress
import re
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from classifiers.pipeline import BatchingAnalyser
from service.models import ItemState
from service.outbound.runner import InlineRunner
from tests.clock import FakeClock
from tests.conftest import drain, make_settings, running_app
from tests.factories import ADMIN, comment_payload, create_member, create_source, create_team, post_event, put_rules
from tests.processes import free_port

BASE_URL = "https://switchboard.example"
PII_BODY = (
    "My payslip is wrong again this month. Please call me on +44 20 7946 0958 or write to "
    "jane.doe@example.com before Friday, I need it sorted."
)
PII_FRAGMENTS = ("jane.doe", "jane.doe@example.com", "example.com", "+44", "7946", "0958", "20 7946", "2079460958")
SMTP_USER, SMTP_PASSWORD = "switchboard", "s3cret-smtp-pa55word"
QUIET, BATCH = 10, 60  # the settings' notify_quiet_seconds and notify_batch_seconds


# ---- a recording SMTP server ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offered:
    """One DATA an SMTP client offered, and what the server answered."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    answer: str
    authenticated_as: str | None
    tls: bool

    @property
    def accepted(self) -> bool:
        """The server took the mail (a 250)."""
        return self.answer.startswith("250")

    def part(self, subtype: str) -> str:
        """The text/<subtype> body."""
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        content: str = body.get_content()
        return content

    @property
    def shown(self) -> str:
        """Everything a reader sees: subject, plain text and HTML."""
        return "\n".join((str(self.message["Subject"]), self.part("plain"), self.part("html")))


@dataclass
class Mailbox:
    """An aiosmtpd handler: records every DATA; answers the scripted replies first, then 250."""

    script: list[str] = field(default_factory=list)
    offered: list[Offered] = field(default_factory=list)
    logins: dict[int, str] = field(default_factory=dict)  # id(session) -> the login its AUTH succeeded with
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(  # noqa: N802  (aiosmtpd's hook name)
        self,
        server: SMTP,  # noqa: ARG002  (aiosmtpd's hook signature)
        session: Session,
        envelope: Envelope,
    ) -> str:
        """Record the mail and answer (aiosmtpd calls this in its own thread's event loop)."""
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            answer = self.script.pop(0) if self.script else "250 Message accepted for delivery"
            self.offered.append(
                Offered(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                    answer=answer,
                    authenticated_as=self.logins.get(id(session)) if session.authenticated else None,
                    tls=session.ssl is not None,
                )
            )
        return answer

    def authenticate(
        self,
        server: SMTP,  # noqa: ARG002  (aiosmtpd's authenticator signature)
        session: Session,
        envelope: Envelope,  # noqa: ARG002  (the same)
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """AUTH LOGIN / PLAIN with the test's one account."""
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            with self.lock:
                self.logins[id(session)] = f"{mechanism}:{SMTP_USER}"
        return AuthResult(success=ok, handled=False)  # not handled: the server answers 535 itself

    @property
    def mails(self) -> list[Offered]:
        """The mails the server accepted."""
        with self.lock:
            return [o for o in self.offered if o.accepted]

    @property
    def attempts(self) -> list[Offered]:
        """Every DATA offered (accepted or not)."""
        with self.lock:
            return list(self.offered)


@contextmanager
def smtp_server(mailbox: Mailbox, **options: Any) -> Iterator[int]:
    """aiosmtpd on 127.0.0.1 and a free port (its own thread and loop); yields the port."""
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@dataclass(frozen=True, slots=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 (its own CA), as PEM files."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """What the SMTP server presents on STARTTLS."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def self_signed(directory: Path) -> Certificate:
    """A fresh key and a self-signed certificate valid for 127.0.0.1 for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Switchboard test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    found = Certificate(directory / "smtp-cert.pem", directory / "smtp-key.pem")
    found.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return found


# ---- the app, its directory, rules, channel and subscriptions -------------------------------------------------


@asynccontextmanager
async def switchboard(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on `clock`, with links to BASE_URL and the default batching window."""
    settings = make_settings(
        database_url, public_base_url=BASE_URL + "/", notify_quiet_seconds=QUIET, notify_batch_seconds=BATCH
    )
    async with running_app(settings, analyser, clock=clock) as client:
        yield client


async def email_channel(client: httpx.AsyncClient, port: int, **config: Any) -> None:
    """The e-mail channel `mail` through the test's SMTP server (no TLS, no login unless `config` says)."""
    body = {
        "id": "mail",
        "name": "E-mail",
        "kind": "email",
        "config": {"host": "127.0.0.1", "port": port, "security": "none", "from_address": "switchboard@corp.test",
                   **config},
    }  # fmt: skip
    response = await client.post("/v1/admin/channels", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert SMTP_PASSWORD not in response.text


async def subscribe(client: httpx.AsyncClient, **scope: str) -> None:
    """Subscribe the `mail` channel to new items of a member or a team."""
    body = {"channel": "mail", "events": ["item.assigned"], **scope}
    response = await client.post("/v1/admin/subscriptions", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text


async def anna_gets_new_items(client: httpx.AsyncClient, port: int, **config: Any) -> str:
    """A source; Anna (with an address) owns every new comment and is told of new items by e-mail. The secret."""
    secret = await create_source(client)
    await create_member(client, "anna", email="anna@corp.test")
    await put_rules(client, [{"id": "anna", "name": "Everything to Anna",
                              "then": {"assign": {"to": "member", "member": "anna"}, "sla": "PT4H"}}])  # fmt: skip
    await email_channel(client, port, **config)
    await subscribe(client, member="anna")
    return secret


async def queue(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every item, as an admin sees it."""
    params: dict[str, Any] = {"limit": 200, "state": [s.value for s in ItemState]}
    response = await client.get("/v1/queue", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def deliveries(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The notification deliveries, oldest first."""
    response = await client.get("/v1/admin/deliveries", params={"kind": "notification"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["items"]
    return found[::-1]


async def settle(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Batch and deliver whatever is due now, until no notification delivery is pending or running; returns them.

    `settle()` returns when a round of its own claims nothing, and the app's own delivery loop may still be sending
    a message it claimed: the deliveries' states say when everything due has been tried.
    """
    runner = client.app.state.services.outbound  # type: ignore[attr-defined]
    assert isinstance(runner, InlineRunner)
    async with asyncio.timeout(30):
        while True:
            await runner.settle()
            found = await deliveries(client)
            if not any(d["state"] in ("pending", "running") for d in found):
                return found
            await asyncio.sleep(0.05)


async def new_comment(client: httpx.AsyncClient, secret: str, comment_id: str, body: str, author: str) -> None:
    """A platform posts a new comment; it is processed and routed."""
    payload = comment_payload(comment_id, body=body)
    payload["data"]["author"] = {"id": author, "name": author.title()}
    response = await post_event(client, secret, payload)
    assert response.status_code == 202, response.text
    await drain(client)


# ---- one new item: one e-mail, no personal data ----------------------------------------------------------------


async def test_a_new_item_sends_its_owner_one_email_with_link_and_reason_and_no_personal_data_of_the_comment(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        async with switchboard(database_url, analyser, clock) as client:
            secret = await anna_gets_new_items(client, port)
            await new_comment(client, secret, "c-1", PII_BODY, "u-100")
            (item,) = await queue(client)
            assert item["member"] == "anna"
            reason = item["reason"]
            assert reason

            assert await settle(client) == []  # within the quiet period: nothing is sent yet
            assert mailbox.attempts == []
            clock.advance(QUIET + 1)
            (delivery,) = await settle(client)
            clock.advance(BATCH * 10)  # nothing else is waiting to be told
            assert len(await settle(client)) == 1

    (mail,) = mailbox.mails
    assert len(mailbox.attempts) == 1
    assert mail.rcpt_tos == ["anna@corp.test"]
    assert mail.message["To"] == "anna@corp.test"
    assert mail.mail_from == mail.message["From"] == "switchboard@corp.test"
    assert mail.message["Message-ID"] == f"<{delivery['key']}@corp.test>"
    subject, text, markup = str(mail.message["Subject"]), mail.part("plain"), mail.part("html")
    for shown in (subject, text, markup):
        for fragment in PII_FRAGMENTS:
            assert fragment not in shown, f"{fragment!r} reached the e-mail: {shown!r}"
    raw = mail.message.as_string()
    assert "jane.doe" not in raw
    assert "7946" not in raw
    assert not re.search(r"\+?44[\s-]*20[\s-]*7946", raw)
    link = f"{BASE_URL}/v1/queue/{item['id']}"
    assert link in text
    assert f'href="{link}"' in markup
    assert reason in text
    assert html.escape(reason) in markup
    assert subject == "[Switchboard] New item: New canteen opening hours"
    assert "My payslip is wrong again this month" in text  # the excerpt is there, only its personal data is not
    assert (delivery["state"], delivery["attempts"], delivery["target"]) == ("delivered", 1, "channel:mail")
    assert (delivery["item_id"], delivery["last_status"]) == (item["id"], 250)


# ---- a burst: one message per subscriber ------------------------------------------------------------------------

TOPICS = ["canteen", "car park", "gym", "library", "crèche", "shuttle bus", "post room", "help desk", "lockers",
          "bike shed"]  # fmt: skip
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


async def test_fifty_new_items_for_a_team_within_a_minute_send_each_subscriber_one_batched_email(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock
) -> None:
    members = ["hr1", "hr2", "hr3"]
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        async with switchboard(database_url, analyser, clock) as client:
            secret = await create_source(client)
            for member in members:
                await create_member(client, member, email=f"{member}@corp.test")
            await create_team(client, "hr", members)
            await put_rules(client, [{"id": "hr", "name": "Everything to HR",
                                      "then": {"assign": {"to": "team", "team": "hr"}}}])  # fmt: skip
            await email_channel(client, port)
            await subscribe(client, team="hr")
            # One every half second: 24.5 s of the test's clock from the first to the last, never quiet for 10 s.
            # The clock also runs with the wall clock, which gets the remaining 35 s of the minute as headroom for
            # a slow machine (past BATCH, the batch is sent as it stands, rightly).
            for i in range(50):
                question = f"Question {i}: when does the {TOPICS[i % 10]} open on {DAYS[i // 10]}?"
                await new_comment(client, secret, f"c-{i}", question, f"employee-{i}")  # not u-7, the story's author
                if i < 49:
                    clock.advance(0.5)
            assert await settle(client) == []  # still one burst: nothing sent
            clock.advance(QUIET + 1)
            sent = await settle(client)
            clock.advance(BATCH * 10)
            assert len(await settle(client)) == 3
            items = await queue(client)

    assert len(items) == 50
    assert {i["team"] for i in items} == {"hr"}
    assert [(d["state"], d["attempts"]) for d in sent] == [("delivered", 1)] * 3
    assert len({d["key"] for d in sent}) == 3
    mails = mailbox.mails
    assert len(mails) == len(mailbox.attempts) == 3
    assert sorted(to for m in mails for to in m.rcpt_tos) == [f"{m}@corp.test" for m in members]
    item_ids = {i["id"] for i in items}
    links = re.compile(re.escape(BASE_URL) + r"/v1/queue/([0-9a-f-]{36})")
    for mail in mails:
        assert mail.message["Subject"] == "[Switchboard] 50 notifications"
        text = mail.part("plain")
        listed = links.findall(text)
        assert len(listed) == 20  # the first twenty ...
        assert len(set(listed)) == 20
        assert set(listed) <= item_ids
        assert "... and 30 more." in text  # ... and how many more
        assert "... and 30 more." in mail.part("html")
        assert len(links.findall(mail.part("html"))) == 20
        assert "Question 0:" in text
        assert "Question 19:" in text
        assert "Question 20:" not in text
    assert len({m.message["Message-ID"] for m in mails}) == 3


# ---- what the SMTP server answers --------------------------------------------------------------------------------


async def test_a_temporary_smtp_refusal_is_retried_and_the_email_delivered_once(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock
) -> None:
    mailbox = Mailbox(script=["451 4.3.0 Mail server temporarily unavailable, try again later"])
    with smtp_server(mailbox) as port:
        async with switchboard(database_url, analyser, clock) as client:
            secret = await anna_gets_new_items(client, port)
            await new_comment(client, secret, "c-1", "Is the canteen open on Sunday?", "u-100")
            clock.advance(QUIET + 1)
            (failed,) = await settle(client)
            assert (failed["state"], failed["attempts"], failed["last_status"]) == ("failed", 1, 451)
            assert failed["last_error"] == "SMTP 451"
            assert mailbox.mails == []
            clock.advance(5)  # past the first backoff (1-2 s)
            (delivered,) = await settle(client)
            clock.advance(3600)
            assert await settle(client) == [delivered]

    assert (delivered["state"], delivered["attempts"], delivered["last_status"]) == ("delivered", 2, 250)
    assert delivered["key"] == failed["key"]
    assert [a.answer[:3] for a in mailbox.attempts] == ["451", "250"]
    first, second = mailbox.attempts
    assert first.message["Message-ID"] == second.message["Message-ID"] == f"<{delivered['key']}@corp.test>"
    assert len(mailbox.mails) == 1


async def test_a_permanent_smtp_refusal_is_dead_at_once(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock
) -> None:
    mailbox = Mailbox(script=["550 5.1.1 Mailbox unavailable"])
    with smtp_server(mailbox) as port:
        async with switchboard(database_url, analyser, clock) as client:
            secret = await anna_gets_new_items(client, port)
            await new_comment(client, secret, "c-1", "Is the canteen open on Sunday?", "u-100")
            clock.advance(QUIET + 1)
            (dead,) = await settle(client)
            clock.advance(3600)  # no retry ever comes
            assert await settle(client) == [dead]
            dead_list = await client.get("/v1/admin/deliveries", params={"state": "dead"}, headers=ADMIN)

    assert (dead["state"], dead["attempts"], dead["last_status"], dead["last_error"]) == ("dead", 1, 550, "SMTP 550")
    assert [d["id"] for d in dead_list.json()["items"]] == [dead["id"]]
    assert [a.answer[:3] for a in mailbox.attempts] == ["550"]
    assert mailbox.mails == []


# ---- STARTTLS and AUTH --------------------------------------------------------------------------------------------


async def test_the_smtp_channel_logs_in_over_starttls(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server offers AUTH only after STARTTLS and refuses mail before it (require_starttls, auth_required); the
    client trusts the test's self-signed certificate as a private CA, through SSL_CERT_FILE."""
    certificate = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    mailbox = Mailbox()
    options = {"tls_context": certificate.server_context(), "require_starttls": True, "auth_required": True,
               "auth_require_tls": True, "authenticator": mailbox.authenticate}  # fmt: skip
    with smtp_server(mailbox, **options) as port:
        async with switchboard(database_url, analyser, clock) as client:
            secret = await anna_gets_new_items(
                client, port, security="starttls", username=SMTP_USER, password=SMTP_PASSWORD
            )
            await new_comment(client, secret, "c-1", "Is the canteen open on Sunday?", "u-100")
            clock.advance(QUIET + 1)
            (delivery,) = await settle(client)

    assert (delivery["state"], delivery["attempts"]) == ("delivered", 1)
    (mail,) = mailbox.mails
    assert mail.tls
    assert mail.authenticated_as in (f"PLAIN:{SMTP_USER}", f"LOGIN:{SMTP_USER}")
    assert mail.rcpt_tos == ["anna@corp.test"]


async def test_an_smtp_server_whose_certificate_is_not_trusted_is_not_sent_to_and_is_retried(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock, tmp_path: Path
) -> None:
    """The same server without SSL_CERT_FILE: the self-signed certificate fails verification, so no password and
    no mail cross the connection; the delivery fails (retryable: the certificate may be fixed) rather than dies."""
    certificate = self_signed(tmp_path)
    mailbox = Mailbox()
    options = {"tls_context": certificate.server_context(), "require_starttls": True, "auth_required": True,
               "auth_require_tls": True, "authenticator": mailbox.authenticate}  # fmt: skip
    with smtp_server(mailbox, **options) as port:
        async with switchboard(database_url, analyser, clock) as client:
            secret = await anna_gets_new_items(
                client, port, security="starttls", username=SMTP_USER, password=SMTP_PASSWORD
            )
            await new_comment(client, secret, "c-1", "Is the canteen open on Sunday?", "u-100")
            clock.advance(QUIET + 1)
            (delivery,) = await settle(client)

    assert (delivery["state"], delivery["attempts"]) == ("failed", 1)
    assert "CERTIFICATE_VERIFY_FAILED" in delivery["last_error"] or "certificate" in delivery["last_error"].lower()
    assert mailbox.attempts == []
    assert mailbox.logins == {}


async def test_a_wrong_smtp_password_is_dead_at_once(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    mailbox = Mailbox()
    options = {"tls_context": certificate.server_context(), "require_starttls": True, "auth_required": True,
               "auth_require_tls": True, "authenticator": mailbox.authenticate}  # fmt: skip
    with smtp_server(mailbox, **options) as port:
        async with switchboard(database_url, analyser, clock) as client:
            secret = await anna_gets_new_items(
                client, port, security="starttls", username=SMTP_USER, password="not-the-password"
            )
            await new_comment(client, secret, "c-1", "Is the canteen open on Sunday?", "u-100")
            clock.advance(QUIET + 1)
            (delivery,) = await settle(client)

    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == ("dead", 1, 535)
    assert "not-the-password" not in str(delivery)
    assert mailbox.attempts == []
