"""Everything that leaves Switchboard: platform callbacks and notifications, written to an outbox and delivered.

- `tables`: the outbox (`outbound_message`) and the notification channels (`channel`).
- `outbox`: `emit` writes a message in the caller's transaction; its id is handed to the delivery runner after
  commit (and found by the sweep if that hand-off is lost).
- `platform`: the messages a source's platform gets (reply.created, comment.held / released / rejected,
  item.resolved) and echo recognition of delivered replies.
- `endpoints`: how a message reaches its target: a source's callback (Standard Webhooks), a Slack or Teams
  webhook, a signed generic webhook, an SMTP server.
- `delivery`: claims due messages (ordering per comment, per-target concurrency and rate), sends them, records
  delivered / failed (backoff with jitter, Retry-After) / dead.
- `admin`: the admin view of deliveries, and retry.
"""
