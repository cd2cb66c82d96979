"""Ingest benchmark: a real `switchboard serve` per database backend, plus the bare encoder in-process.

    .venv/bin/python -m benchmarks.ingest [--rate 100 --seconds 10 --backends sqlite,postgresql]

For each backend (an SQLite file in a temporary folder; a throwaway PostgreSQL database that is dropped
afterwards) a server subprocess is started on 127.0.0.1 with the in-process job backend, a source is created
through the admin API, and then:

a. open loop: signed `comment.created` webhooks are started on a fixed schedule (``--rate`` per second for
   ``--seconds``), whether or not earlier ones have been answered, so a slow server shows up as latency
   (measured from each request's *scheduled* send time) instead of as a lower send rate;
b. closed loop: ``--concurrency`` clients send back to back for ``--closed-seconds``;
c. drain: the job table is polled until nothing is pending or running (at most ``--drain-timeout`` s), and
   the job rows' own timestamps give the processing throughput.

Then the encoder and the analysis pipeline are timed in this process. Everything is bounded in count and
time and talks to loopback only. Progress goes to stderr, the result tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import importlib.metadata
import itertools
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
SLUG = "bench"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
READY_TIMEOUT_SECONDS = 120.0
RESPONSE_GRACE_SECONDS = 30.0  # after the load window: how long unanswered requests may still take
REQUEST_TIMEOUT_SECONDS = 30.0
POLL_INTERVAL_SECONDS = 0.5
JOB_PAGE = 500
MIN_DRAIN_JOBS = 64  # fewer jobs left after the load: no meaningful after-load processing rate
MAX_JOB_PAGES = 200  # 100 000 job rows: far more than any default run creates


def log(message: str) -> None:
    """Progress, on stderr (stdout carries only the result tables)."""
    print(f"# {message}", file=sys.stderr, flush=True)


# ---- comments and signed deliveries -----------------------------------------------------------------------

SUBJECTS = [
    "the canteen",
    "the car park",
    "the night shift rota",
    "the new intranet",
    "the printer on floor 3",
    "the VPN",
    "the holiday planner",
    "the coffee machine",
    "the parking permit scheme",
    "the fire drill",
    "the expenses tool",
    "the bike shed",
    "the quarterly all-hands",
    "the wellbeing budget",
]
TEMPLATES = [
    "Will {s} open earlier for the night shift?",
    "Thanks for the update on {s}, very helpful.",
    "Why does {s} keep failing on Mondays?",
    "Does anyone know who is responsible for {s}?",
    "Honestly I think {s} was better before the change.",
    "Great news about {s}! When does it start?",
    "{S} has been broken since last week, can someone have a look?",
    "Is there a plan to extend {s} to the other sites as well?",
    "Who decided this about {s}? Nobody asked the warehouse team.",
    "Could we get a short FAQ on {s}? Lots of questions in our team.",
]
EXTRAS = [
    "",
    " Cheers.",
    " Asking for the whole team.",
    " We raised this at the last town hall too.",
    " Thanks in advance!",
    " It affects about twenty of us.",
]
NAMES = ["Alex", "Sam", "Priya", "Jonas", "Mei", "Tomasz", "Fatima", "Lars", "Ines", "Kwame"]
DEPARTMENTS = ["Finance", "Logistics", "HR", "IT", "Sales", "Facilities", "Legal"]
THREADS = 25  # comments spread over this many stories, as on a real intranet


def comment_texts(count: int, *, seed: int = 7) -> list[str]:
    """`count` distinct, short, comment-like texts; about one in ten carries an e-mail address or phone number."""
    rng = random.Random(seed)
    texts: list[str] = []
    for i in range(count):
        subject = rng.choice(SUBJECTS)
        text = rng.choice(TEMPLATES).format(s=subject, S=subject[0].upper() + subject[1:]) + rng.choice(EXTRAS)
        roll = rng.random()
        if roll < 0.05:
            text += f" Mail me at {rng.choice(NAMES).lower()}.{i}@example.com."
        elif roll < 0.10:
            text += f" Call me on +44 20 7946 {rng.randrange(10000):04d}."
        texts.append(f"{text} ({rng.choice(NAMES)}, ref {i})")
    return texts


def sign(key: bytes, *, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1 signature (https://www.standardwebhooks.com), as a sending platform computes it."""
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Sender:
    """Builds distinct signed `comment.created` deliveries (distinct webhook ids, comment ids and bodies)."""

    def __init__(self, secret: str, run_tag: str) -> None:
        raw = secret.removeprefix("whsec_")
        self._key = base64.b64decode(raw + "=" * (-len(raw) % 4))
        self._tag = run_tag
        self._counter = itertools.count()
        self._rng = random.Random(11)
        self._texts = comment_texts(2048)

    def delivery(self) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the next delivery."""
        n = next(self._counter)
        text = self._texts[n % len(self._texts)]
        if n >= len(self._texts):
            text = f"{text} #{n}"
        thread = n % THREADS
        payload = {
            "type": "comment.created",
            "data": {
                "id": f"c-{self._tag}-{n}",
                "thread": {
                    "id": f"story-{thread}",
                    "title": f"Story {thread}",
                    "url": f"https://intranet.example/news/{thread}",
                    "kind": "news",
                    "channel": "news/facilities",
                    "author": {"id": "u-1", "name": "Story Author", "email": "author@example.com"},
                },
                "author": {
                    "id": f"u-{self._rng.randrange(500)}",
                    "name": self._rng.choice(NAMES),
                    "department": self._rng.choice(DEPARTMENTS),
                },
                "body": text,
                "created_at": "2026-11-21T10:00:00Z",
            },
        }
        body = json.dumps(payload).encode()
        webhook_id = f"msg_{self._tag}_{n}"
        timestamp = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, webhook_id=webhook_id, timestamp=timestamp, body=body),
            "content-type": "application/json",
        }
        return body, headers


# ---- measurements -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One request: HTTP status (0: no response), latency in seconds, completion time (loop clock)."""

    status: int
    latency: float
    completed: float
    detail: str | None = None  # the error, or the start of a non-2xx body


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `values` (q in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def percent_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def rate_text(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


@dataclass(slots=True)
class LoadResult:
    """One load phase."""

    samples: list[Sample]
    window: float  # from the first scheduled send to the last response, seconds
    started_wall: float
    ended_wall: float
    t0: float  # loop clock at the start of the phase
    offered: float | None = None  # open loop only
    max_start_lag: float = 0.0  # open loop only: how late the generator started a request
    server_cpu: float | None = None  # the server process's CPU use during the phase, % of one core
    connections: int = 0  # open loop only: connections (senders)

    @property
    def ok(self) -> int:
        return sum(1 for s in self.samples if 200 <= s.status < 300)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not 200 <= s.status < 300]

    @property
    def acks_per_second(self) -> float:
        return self.ok / self.window if self.window > 0 else math.nan

    def latency(self, q: float) -> float:
        return percentile([s.latency for s in self.samples], q)


async def post(client: httpx.AsyncClient, body: bytes, headers: dict[str, str], start: float) -> Sample:
    """POST one delivery; latency counted from `start` (loop clock)."""
    loop = asyncio.get_running_loop()
    try:
        response = await client.post(f"/v1/webhooks/{SLUG}", content=body, headers=headers)
    except httpx.HTTPError as exc:
        now = loop.time()
        cause = f" (from {exc.__cause__!r})" if exc.__cause__ is not None else ""
        return Sample(0, now - start, now, f"{type(exc).__name__}: {exc}{cause}"[:300])
    now = loop.time()
    detail = None if response.is_success else response.text[:300]
    return Sample(response.status_code, now - start, now, detail)


async def open_loop(
    client: httpx.AsyncClient, sender: Sender, *, rate: float, seconds: float, connections: int
) -> LoadResult:
    """Offer `rate` requests per second on a fixed schedule for `seconds`, whatever the responses do.

    Requests go into a FIFO at their scheduled time; `connections` senders, one connection each, take them
    out in order. Latency runs from the scheduled time, so time spent waiting for a free connection (the
    server being slow) counts, as it would for a real platform. The queue lives here rather than in httpx's
    pool, whose waiting list costs O(waiting x connections) CPU per event and starves this process once
    hundreds of requests wait, leaving connections idle long enough for uvicorn's 5 s keep-alive timer.
    """
    loop = asyncio.get_running_loop()
    count = max(1, round(rate * seconds))
    deliveries = [sender.delivery() for _ in range(count)]  # signed up front: signing is not what we measure
    samples: list[Sample] = []
    lags: list[float] = []
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def connection_sender() -> None:
        while (item := await queue.get()) is not None:
            index, scheduled = item
            body, headers = deliveries[index]
            samples.append(await post(client, body, headers, scheduled))

    started_wall = time.time()
    t0 = loop.time() + 0.05
    senders = [asyncio.create_task(connection_sender()) for _ in range(connections)]
    for index in range(count):
        scheduled = t0 + index / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(loop.time() - scheduled)
        queue.put_nowait((index, scheduled))
    for _ in senders:
        queue.put_nowait(None)
    _, unfinished = await asyncio.wait(senders, timeout=RESPONSE_GRACE_SECONDS)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    now = loop.time()
    samples.extend(
        Sample(0, now - t0, now, f"no response {RESPONSE_GRACE_SECONDS:.0f} s after the load window")
        for _ in range(count - len(samples))
    )
    last = max(s.completed for s in samples)
    return LoadResult(
        samples=samples,
        window=last - t0,
        started_wall=started_wall,
        ended_wall=time.time(),
        t0=t0,
        offered=rate,
        max_start_lag=max(lags, default=0.0),
        connections=connections,
    )


async def closed_loop(client: httpx.AsyncClient, sender: Sender, *, concurrency: int, seconds: float) -> LoadResult:
    """`concurrency` clients, each sending its next request as soon as the previous one is answered."""
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    t0 = loop.time()
    deadline = t0 + seconds

    async def client_loop() -> None:
        while loop.time() < deadline:
            body, headers = sender.delivery()
            samples.append(await post(client, body, headers, loop.time()))

    started_wall = time.time()
    async with asyncio.timeout(seconds + RESPONSE_GRACE_SECONDS):
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    last = max((s.completed for s in samples), default=loop.time())
    return LoadResult(samples=samples, window=last - t0, started_wall=started_wall, ended_wall=time.time(), t0=t0)


# ---- the job table ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class JobStats:
    """What the job rows say once processing has drained (or the wait gave up)."""

    drain_seconds: float | None
    states: Counter[str]
    retried: int  # jobs that needed more than one attempt
    errors: Counter[str]
    processing_window: float | None  # first start to last finish, seconds (server clock)
    backlog_after_open: int  # jobs created by then but not finished when the open-loop phase ended
    backlog_after_closed: int
    drain_window: float | None  # end of the closed loop to the last finish, seconds
    drain_done: int  # jobs finished after the closed loop ended
    drain_cpu: float | None = None  # the server process's CPU use while draining, % of one core

    @property
    def done(self) -> int:
        return self.states.get("done", 0)

    @property
    def processing_rate(self) -> float | None:
        if not self.processing_window or not self.done:
            return None
        return self.done / self.processing_window

    @property
    def drain_rate(self) -> float | None:
        if not self.drain_window or self.drain_done < MIN_DRAIN_JOBS:
            return None
        return self.drain_done / self.drain_window


async def job_exists(client: httpx.AsyncClient, state: str) -> bool:
    response = await client.get("/v1/admin/jobs", params={"state": state, "limit": 1})
    response.raise_for_status()
    return bool(response.json()["items"])


async def wait_drained(client: httpx.AsyncClient, give_up_after: float) -> float | None:
    """Seconds until no job is pending or running; None when `give_up_after` seconds passed first."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        if not await job_exists(client, "pending") and not await job_exists(client, "running"):
            return loop.time() - start
        if loop.time() - start > give_up_after:
            return None
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


def parse_time(value: Any) -> float | None:
    return None if value is None else datetime.fromisoformat(str(value)).timestamp()


async def job_stats(
    client: httpx.AsyncClient, *, drain_seconds: float | None, open_end: float, closed_end: float
) -> JobStats:
    """Read every job row (pages of 500) and summarise them."""
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_JOB_PAGES):
        params: dict[str, Any] = {"limit": JOB_PAGE}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/admin/jobs", params=params)
        response.raise_for_status()
        page = response.json()
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    starts = [t for r in rows if (t := parse_time(r["started_at"])) is not None]
    finishes = [t for r in rows if r["state"] == "done" and (t := parse_time(r["finished_at"])) is not None]

    def backlog(at: float) -> int:
        count = 0
        for r in rows:
            created, finished = parse_time(r["created_at"]), parse_time(r["finished_at"])
            if created is not None and created <= at and (finished is None or finished > at):
                count += 1
        return count

    return JobStats(
        drain_seconds=drain_seconds,
        states=Counter(str(r["state"]) for r in rows),
        retried=sum(1 for r in rows if int(r["attempts"]) > 1),
        errors=Counter(str(r["last_error"])[:200] for r in rows if r["last_error"]),
        processing_window=(max(finishes) - min(starts)) if starts and finishes else None,
        backlog_after_open=backlog(open_end),
        backlog_after_closed=backlog(closed_end),
        drain_window=(max(finishes) - closed_end) if finishes and max(finishes) > closed_end else None,
        drain_done=sum(1 for t in finishes if t > closed_end),
    )


# ---- the server -------------------------------------------------------------------------------------------


def switchboard_command() -> str:
    """The `switchboard` console script of the interpreter running this benchmark."""
    beside = Path(sys.executable).parent / "switchboard"
    if beside.is_file():
        return str(beside)
    found = shutil.which("switchboard")
    if found is None:
        raise RuntimeError("the `switchboard` command is not installed next to this Python")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_environment(database_url: str, admin_key: str) -> dict[str, str]:
    """This environment without any SWITCHBOARD_* setting, plus the database and the bootstrap admin key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_DATABASE_URL"] = database_url
    env["SWITCHBOARD_BOOTSTRAP_ADMIN_KEY"] = admin_key
    # The load is the point here: rate limits off (their own tests cover them).
    env["SWITCHBOARD_RATE_LIMIT_PER_KEY_PER_MINUTE"] = "0"
    env["SWITCHBOARD_RATE_LIMIT_PER_SOURCE_PER_MINUTE"] = "0"
    return env


def open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


def log_tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def run_migrate(env: dict[str, str], log_path: Path) -> None:
    """`switchboard migrate` (serve migrates only SQLite by itself)."""
    with open_log(log_path) as out:
        process = await asyncio.create_subprocess_exec(
            switchboard_command(), "migrate", env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            code = await asyncio.wait_for(process.wait(), 120)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError("`switchboard migrate` did not finish within 120 s") from None
    if code != 0:
        raise RuntimeError(f"`switchboard migrate` exited with {code}:\n{log_tail(log_path)}")


@contextlib.asynccontextmanager
async def running_server(
    env: dict[str, str], log_path: Path, admin_key: str
) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    """`switchboard serve` on a free loopback port until ready; an admin client; SIGTERM on the way out."""
    port = free_port()
    with open_log(log_path) as out:
        process = await asyncio.create_subprocess_exec(
            switchboard_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    log(f"server pid {process.pid} on 127.0.0.1:{port}, log {log_path}")
    try:
        base_url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as admin:
            started = time.monotonic()
            await wait_ready(admin, process, log_path)
            log(f"ready after {time.monotonic() - started:.1f} s")
            yield admin, process.pid
    finally:
        await stop(process)


async def wait_ready(client: httpx.AsyncClient, process: asyncio.subprocess.Process, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log_tail(log_path)}")
        try:
            response = await client.get("/readyz", timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.2)
    raise RuntimeError(f"/readyz did not answer 200 within {READY_TIMEOUT_SECONDS:.0f} s (last: {last})")


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, wait; SIGKILL if it does not stop within 30 s."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        log(f"server pid {process.pid} ignored SIGTERM for 30 s; killing it")
        process.kill()
        await process.wait()
    log(f"server pid {process.pid} stopped (exit code {process.returncode})")


LOG_PATTERNS = {
    "tracebacks": re.compile(r"^Traceback"),
    "ERROR lines": re.compile(r"\bERROR\b"),
    "5xx access lines": re.compile(r'HTTP/1\.[01]" 5\d\d'),
    "database is locked": re.compile(r"database is locked", re.IGNORECASE),
    "pool timeouts": re.compile(r"QueuePool limit|TimeoutError", re.IGNORECASE),
}


def scan_log(path: Path) -> tuple[Counter[str], list[str]]:
    """Counts of suspicious lines in the server log, and the first few distinct error lines as evidence."""
    counts: Counter[str] = Counter()
    evidence: list[str] = []
    if not path.exists():
        return counts, evidence
    for line in path.read_text(errors="replace").splitlines():
        for name, pattern in LOG_PATTERNS.items():
            if pattern.search(line):
                counts[name] += 1
        interesting = re.search(r"\bERROR\b|Error:|Exception:|database is locked", line)
        if interesting and line.strip()[:160] not in evidence and len(evidence) < 8:
            evidence.append(line.strip()[:160])
    return counts, evidence


# ---- one backend ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class BackendResult:
    name: str
    open: LoadResult | None = None
    closed: LoadResult | None = None
    jobs: JobStats | None = None
    skipped: str | None = None
    error: str | None = None
    log_counts: Counter[str] = field(default_factory=Counter)
    log_evidence: list[str] = field(default_factory=list)


def load_client(base_url: str, connections: int) -> httpx.AsyncClient:
    # keepalive_expiry below uvicorn's 5 s keep-alive timeout: an idle connection is dropped by us before the
    # server closes it, instead of racing the server's close with a new request (a ReadError).
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=4.0)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, pool=None)  # waiting for a connection is part of latency
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all its threads (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


class CpuMeter:
    """The CPU use of a process during a `with` block, in % of one core (`percent`; None off Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.percent: float | None = None
        self._before: float | None = None
        self._started = 0.0

    def __enter__(self) -> CpuMeter:
        self._before, self._started = cpu_seconds(self.pid), time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        after = cpu_seconds(self.pid)
        if self._before is not None and after is not None:
            self.percent = 100 * (after - self._before) / (time.monotonic() - self._started)


async def exercise(admin: httpx.AsyncClient, pid: int, args: argparse.Namespace, result: BackendResult) -> None:
    """Create a source, run both load phases and wait for processing to drain."""
    response = await admin.post("/v1/admin/sources", json={"slug": SLUG, "name": "Benchmark"})
    if response.status_code != 201:
        raise RuntimeError(f"creating the source answered {response.status_code}: {response.text[:300]}")
    sender = Sender(response.json()["secret"], run_tag=secrets.token_hex(3))
    base_url = str(admin.base_url)

    # Enough connections to carry the offered rate at up to 0.5 s per request: a server that keeps up is
    # never held back by the client; one that does not makes requests wait for a connection, which counts.
    connections = min(256, max(16, math.ceil(args.rate * 0.5)))
    log(f"{result.name}: open loop, {args.rate:g}/s for {args.seconds:g} s ({connections} connections)")
    async with load_client(base_url, connections) as client:
        with CpuMeter(pid) as meter:
            result.open = await open_loop(client, sender, rate=args.rate, seconds=args.seconds, connections=connections)
        result.open.server_cpu = meter.percent
    log(f"{result.name}: closed loop, {args.concurrency} clients for {args.closed_seconds:g} s")
    async with load_client(base_url, args.concurrency) as client:
        with CpuMeter(pid) as meter:
            result.closed = await closed_loop(client, sender, concurrency=args.concurrency, seconds=args.closed_seconds)
        result.closed.server_cpu = meter.percent
    log(f"{result.name}: waiting for processing to drain (at most {args.drain_timeout:g} s)")
    with CpuMeter(pid) as meter:
        drained = await wait_drained(admin, args.drain_timeout)
    result.jobs = await job_stats(
        admin, drain_seconds=drained, open_end=result.open.ended_wall, closed_end=result.closed.ended_wall
    )
    result.jobs.drain_cpu = meter.percent


async def bench_sqlite(args: argparse.Namespace, workdir: Path) -> BackendResult:
    result = BackendResult("sqlite")
    admin_key = "sbk_bench-" + secrets.token_urlsafe(32)
    database = workdir / "sqlite" / "switchboard.db"
    database.parent.mkdir()
    env = server_environment(f"sqlite+aiosqlite:///{database}", admin_key)
    log_path = workdir / "sqlite" / "server.log"
    try:
        async with running_server(env, log_path, admin_key) as (admin, pid):
            await exercise(admin, pid, args, result)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.log_counts, result.log_evidence = scan_log(log_path)
    return result


async def postgres_problem(admin_url: str) -> str | None:
    import asyncpg  # type: ignore[import-untyped]

    try:
        connection = await asyncpg.connect(admin_url, timeout=3)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await connection.close()
    return None


async def bench_postgresql(args: argparse.Namespace, workdir: Path) -> BackendResult:
    import asyncpg

    result = BackendResult("postgresql")
    admin_url: str = args.postgres_url
    host = make_url(admin_url).host or "127.0.0.1"
    if host not in LOOPBACK_HOSTS:
        result.skipped = f"{host} is not a loopback address (this benchmark stays on 127.0.0.1)"
        return result
    problem = await postgres_problem(admin_url)
    if problem:
        result.skipped = f"PostgreSQL at {admin_url} is unreachable ({problem})"
        return result

    name = f"switchboard_bench_{secrets.token_hex(5)}"
    connection = await asyncpg.connect(admin_url, timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    log(f"postgresql: created database {name}")
    admin_key = "sbk_bench-" + secrets.token_urlsafe(32)
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    env = server_environment(url.render_as_string(hide_password=False), admin_key)
    (workdir / "postgresql").mkdir()
    log_path = workdir / "postgresql" / "server.log"
    try:
        await run_migrate(env, log_path)
        async with running_server(env, log_path, admin_key) as (admin, pid):
            await exercise(admin, pid, args, result)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        connection = await asyncpg.connect(admin_url, timeout=5)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
        log(f"postgresql: dropped database {name}")
    result.log_counts, result.log_evidence = scan_log(log_path)
    return result


async def bench_servers(args: argparse.Namespace, folder: Path) -> list[BackendResult]:
    results: list[BackendResult] = []
    for backend in args.backends:
        if backend == "sqlite":
            results.append(await bench_sqlite(args, folder))
        else:
            results.append(await bench_postgresql(args, folder))
    return results


def run_servers(args: argparse.Namespace) -> list[BackendResult]:
    """Every backend, in a temporary folder (or --keep-dir, which is kept)."""
    if not args.backends:
        return []
    with contextlib.ExitStack() as stack:
        if args.keep_dir is not None:
            folder = Path(args.keep_dir)
            folder.mkdir(parents=True, exist_ok=False)
            log(f"keeping the SQLite database and the server logs in {folder}")
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="switchboard-bench-")))
        return asyncio.run(bench_servers(args, folder))


# ---- the encoder in-process -------------------------------------------------------------------------------


@dataclass(slots=True)
class EncoderResult:
    load_seconds: float
    torch_threads: int
    rows: list[tuple[str, list[float], float, float]]  # what, comments/s of each repeat, single p50, single p99


def timed_batches(function: Callable[[list[str]], object], texts: Sequence[str], batch: int) -> float:
    """Comments per second of `function` over `texts` in chunks of `batch` (after one warm-up chunk)."""
    function(list(texts[:batch]))
    start = time.perf_counter()
    for begin in range(0, len(texts), batch):
        function(list(texts[begin : begin + batch]))
    return len(texts) / (time.perf_counter() - start)


def timed_singles(function: Callable[[list[str]], object], texts: Sequence[str]) -> list[float]:
    latencies = []
    for text in texts:
        start = time.perf_counter()
        function([text])
        latencies.append(time.perf_counter() - start)
    return latencies


def bench_encoder(args: argparse.Namespace) -> EncoderResult:
    import torch

    from classifiers.encoder import Encoder
    from classifiers.pii import find_pii
    from classifiers.pipeline import Pipeline

    texts = comment_texts(args.encoder_texts, seed=3)
    singles = texts[: args.single_calls]
    start = time.perf_counter()
    encoder = Encoder()
    load_seconds = time.perf_counter() - start
    pipeline = Pipeline(encoder)

    def pii_only(batch: list[str]) -> None:
        for text in batch:
            find_pii(text)

    log("encoder: warm-up pass (untimed)")
    timed_batches(encoder.encode, texts, args.batch)  # first forward passes at each padded width are slower
    rows: list[tuple[str, list[float], float, float]] = []
    for what, function in (
        ("Encoder.encode", encoder.encode),
        ("Pipeline.analyse (encoder + PII)", pipeline.analyse),
        ("find_pii only", pii_only),
    ):
        log(f"encoder: timing {what}")
        throughputs = [timed_batches(function, texts, args.batch) for _ in range(args.repeats)]
        latencies = timed_singles(function, singles)
        rows.append((what, throughputs, percentile(latencies, 50), percentile(latencies, 99)))
    return EncoderResult(load_seconds=load_seconds, torch_threads=torch.get_num_threads(), rows=rows)


# ---- output -----------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def failure_summary(phase: str, result: LoadResult) -> Iterator[str]:
    """Failed requests grouped by status and message, with when (into the phase) and after how long."""
    groups: dict[tuple[int, str], list[Sample]] = {}
    for s in result.failures:
        groups.setdefault((s.status, s.detail or ""), []).append(s)
    for (status, detail), samples in sorted(groups.items(), key=lambda item: -len(item[1]))[:5]:
        when = ", ".join(
            f"{s.completed - s.latency - result.t0:.2f} s in, after {s.latency * 1000:.0f} ms" for s in samples[:3]
        )
        yield f"    {phase}: {len(samples)} x {status or 'no response'}: {detail[:200]!r} ({when})"


def report(args: argparse.Namespace, results: Sequence[BackendResult], encoder: EncoderResult | None) -> None:
    ran = [r for r in results if r.open is not None]
    if ran:
        server_tables(args, ran)
    backend_notes(results)
    if encoder is not None:
        encoder_table(args, encoder)


def server_tables(args: argparse.Namespace, ran: Sequence[BackendResult]) -> None:
    print()
    print(
        f"a. Open loop: {args.rate:g} webhooks/s offered for {args.seconds:g} s (latency from the scheduled send time)"
    )
    print(
        table(
            [
                "backend",
                "offered/s",
                "conns",
                "sent",
                "acks/s",
                "non-2xx",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "gen lag ms",
                "server CPU %",
            ],
            [
                [
                    r.name,
                    f"{o.offered or 0:g}",
                    str(o.connections),
                    str(len(o.samples)),
                    rate_text(o.acks_per_second),
                    str(len(o.failures)),
                    ms(o.latency(50)),
                    ms(o.latency(95)),
                    ms(o.latency(99)),
                    ms(o.latency(100)),
                    ms(o.max_start_lag),
                    percent_text(o.server_cpu),
                ]
                for r in ran
                if (o := r.open) is not None
            ],
        )
    )
    print("   acks/s = 2xx answers / (first scheduled send .. last answer); latency includes waiting for one of the")
    print("   `conns` connections; gen lag = worst lateness of the generator against its schedule (the client")
    print("   itself short of CPU when it is more than a few ms).")
    print()
    print(f"b. Closed loop: {args.concurrency} clients back to back for {args.closed_seconds:g} s")
    print(
        table(
            ["backend", "clients", "requests", "acks/s", "non-2xx", "p50 ms", "p99 ms", "max ms", "server CPU %"],
            [
                [
                    r.name,
                    str(args.concurrency),
                    str(len(c.samples)),
                    rate_text(c.acks_per_second),
                    str(len(c.failures)),
                    ms(c.latency(50)),
                    ms(c.latency(99)),
                    ms(c.latency(100)),
                    percent_text(c.server_cpu),
                ]
                for r in ran
                if (c := r.closed) is not None
            ],
        )
    )
    print()
    print(f"c. Background processing (in-process job backend; drain waited for at most {args.drain_timeout:g} s)")
    print(
        table(
            [
                "backend",
                "jobs",
                "done",
                "not done",
                "retried",
                "backlog@a",
                "backlog@b",
                "drain s",
                "jobs/s overall",
                "jobs/s after load",
                "server CPU % (drain)",
            ],
            [
                [
                    r.name,
                    str(sum(j.states.values())),
                    str(j.done),
                    ", ".join(f"{k}={v}" for k, v in sorted(j.states.items()) if k != "done") or "-",
                    str(j.retried),
                    str(j.backlog_after_open),
                    str(j.backlog_after_closed),
                    "timeout" if j.drain_seconds is None else f"{j.drain_seconds:.1f}",
                    rate_text(j.processing_rate),
                    rate_text(j.drain_rate),
                    percent_text(j.drain_cpu),
                ]
                for r in ran
                if (j := r.jobs) is not None
            ],
        )
    )
    print("   From the job rows: jobs/s overall = done jobs / (first job start .. last job finish), so partly while")
    print("   competing with ingestion for the CPU; jobs/s after load = jobs finished after b ended / (end of b ..")
    print("   last finish); backlog@a/@b = jobs created but not finished when phase a/b ended; drain s = from the")
    print("   end of b until the API lists no pending or running job. server CPU % = the server process's CPU")
    print("   time over wall time (100 % = one core).")


def backend_notes(results: Sequence[BackendResult]) -> None:
    for r in results:
        if r.skipped:
            print(f"\n{r.name}: skipped: {r.skipped}")
        if r.error:
            print(f"\n{r.name}: FAILED: {r.error}")
        phases = [(name, phase) for name, phase in (("a", r.open), ("b", r.closed)) if phase and phase.failures]
        if phases:
            print(f"\n{r.name}: requests without a 2xx answer:")
            for name, phase in phases:
                for text in failure_summary(name, phase):
                    print(text)
        if r.jobs and r.jobs.errors:
            print(f"\n{r.name}: job errors (last_error):")
            for text, count in r.jobs.errors.most_common(5):
                print(f"    {count} x {text}")
        if r.log_counts:
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(r.log_counts.items()))
            print(f"\n{r.name}: server log: {counts}")
            for line in r.log_evidence:
                print(f"    {line}")


def encoder_table(args: argparse.Namespace, encoder: EncoderResult) -> None:
    print()
    print(
        f"2. Encoder in-process: {args.encoder_texts} texts in batches of {args.batch}, {args.repeats} runs each; "
        f"single-comment latency over {args.single_calls} calls "
        f"(model load {encoder.load_seconds:.1f} s, torch threads {encoder.torch_threads})"
    )
    print(
        table(
            ["what", "texts", "comments/s best", "comments/s median", "single p50 ms", "single p99 ms"],
            [
                [
                    what,
                    str(args.encoder_texts),
                    f"{max(rates):.1f}",
                    f"{statistics.median(rates):.1f}",
                    ms(p50),
                    ms(p99),
                ]
                for what, rates, p50, p99 in encoder.rows
            ],
        )
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def header() -> None:
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"Switchboard ingest benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(
        f"cores: {os.cpu_count()} (usable by this process: {affinity}); Python {platform.python_version()}; "
        f"torch {torch_version}; {platform.platform()}"
    )
    print(f"load average at start: {load_average()}; the load generator, the server and the encoder share these cores")


# ---- command line -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: webhooks started per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="open loop: duration")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: concurrent clients")
    parser.add_argument("--closed-seconds", type=float, default=5.0, help="closed loop: duration")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="longest wait for processing to drain")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, help="admin URL of a loopback PostgreSQL")
    parser.add_argument("--encoder-texts", type=int, default=512, help="texts for the in-process encoder timing")
    parser.add_argument("--batch", type=int, default=32, help="encoder batch size for the in-process timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs over the texts (best and median shown)")
    parser.add_argument("--single-calls", type=int, default=50, help="single-comment calls for the latency")
    parser.add_argument(
        "--keep-dir", default=None, help="a new folder to keep the SQLite file and server logs in (default: a temp dir)"
    )
    parser.add_argument("--skip-encoder", action="store_true", help="leave out the in-process encoder timing")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in str(args.backends).split(",") if b.strip()]
    unknown = sorted(set(backends) - {"sqlite", "postgresql"})
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(unknown)}")
    args.backends = list(dict.fromkeys(backends))
    limits = {
        "--rate": (args.rate, 0.1, 2000),
        "--seconds": (args.seconds, 0.1, 300),
        "--concurrency": (args.concurrency, 1, 256),
        "--closed-seconds": (args.closed_seconds, 0.1, 300),
        "--drain-timeout": (args.drain_timeout, 0, 600),
        "--encoder-texts": (args.encoder_texts, 1, 10_000),
        "--batch": (args.batch, 1, 256),
        "--single-calls": (args.single_calls, 1, 1000),
        "--repeats": (args.repeats, 1, 20),
    }
    for option, (value, low, high) in limits.items():
        if not low <= value <= high:
            parser.error(f"{option} must be between {low:g} and {high:g}")
    if args.rate * args.seconds > 100_000:
        parser.error("--rate x --seconds is limited to 100 000 requests")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    header()
    results = run_servers(args)
    encoder = None if args.skip_encoder else bench_encoder(args)
    report(args, results, encoder)
    print(f"\ntotal run time {time.monotonic() - started:.0f} s; load average at the end: {load_average()}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
