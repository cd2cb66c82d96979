"""A fast local HTTP receiver for the outbound benchmark, run as its own process (so it does not share a core's
time with the service under test):

    .venv/bin/python -m benchmarks.receiver [--port 0]   # prints the port on its first line

Every POST is answered 200 `{"external_id": "r-<n>"}` and kept (headers and body); `GET /stats` answers the count,
the distinct `webhook-id`s and how many requests verify with the secret given in its `x-secret` header (Standard
Webhooks, checked by the `standardwebhooks` package when asked; `DELETE /stats` forgets everything).
HTTP/1.1 with keep-alive and Content-Length bodies only: what httpx sends.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from standardwebhooks.webhooks import Webhook


class Receiver:
    """The state of one receiver."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []

    def stats(self, secret: str | None) -> dict[str, int]:
        ids = [h.get("webhook-id") or h.get("idempotency-key") or "" for h, _ in self.requests]
        verified = 0
        if secret:
            webhook = Webhook(secret)
            for headers, body in self.requests:
                try:
                    webhook.verify(body, headers)
                except Exception:  # noqa: S112  (a failed verification is what is being counted)
                    continue
                verified += 1
        return {"requests": len(self.requests), "distinct_ids": len(set(ids)), "verified": verified}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET" and path == "/stats":
                    answer = json.dumps(self.stats(headers.get("x-secret"))).encode()
                elif method == "DELETE" and path == "/stats":
                    self.requests.clear()
                    answer = b"{}"
                else:
                    self.requests.append((headers, body))
                    answer = json.dumps({"external_id": f"r-{len(self.requests)}"}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(answer)).encode()
                    + b"\r\n\r\n"
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        finally:
            writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", args.port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
