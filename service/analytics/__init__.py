"""Analytics for comms leads: whether comments get answered, how fast, and what people said.

The definitions, written once (docs/analytics.md explains them for readers; `facts.py` is their only
implementation, in SQL, and the tests recompute them in Python from the raw rows):

- **Population.** Every figure is about the comments *received* in the window: `since <= received_at < until`
  (UTC), minus the echoes of Switchboard's own replies (`echo_of_reply_id` set: our answer coming back from the
  platform). A responder sees only the comments whose queue item is theirs or their teams' (`service.queue.viewer`);
  an admin sees every comment, including those without an item.
- **received**: those comments, deleted ones included (they were said).
- **needs_answer**: the comment has a queue item, the item is not marked no-reply (its rule said `no_reply`, or a
  person closed it as no reply needed, duplicate, spam or out of scope, or it was closed as a follow-up or as a staff
  reply), and either the classifier's needs-answer label says `needs_answer` or the item was routed to an owner (a
  member or a team). A comment *deleted before it was answered* no longer needs an answer (there is nothing left to
  answer); one answered before it was deleted still counts, as needing an answer and answered.
- **The clock** starts when the comment was received (`comment.received_at`) and stops at its *first response*
  (`queue_item.first_response_at`): a reply through Switchboard counts when the platform accepted it (its delivery),
  or when it was written if the source has no callback; an answer on the platform (a reply by the owner, a member
  of the item's team or the story's author) at that reply's receipt; a responder's "answered on the platform" when
  they said so. A reopened item keeps its first response.
- **answered**: needing an answer and with a first response. **response_rate** = answered / needs_answer (None
  when nothing needs an answer). Answers to comments that did not need one are not counted (the export shows them).
- **first_response_seconds** `{p50, p90}`: percentiles of (first response - received) over the answered comments,
  *linear interpolation between closest ranks* (PostgreSQL's `percentile_cont`, numpy's default): for n sorted
  values v[0..n-1] and p, h = (n - 1) * p, value = v[floor(h)] + (h - floor(h)) * (v[floor(h) + 1] - v[floor(h)]).
  SQLite computes the same formula with window functions. None when there are no values.
- **within_sla**: of the comments needing an answer whose item has a deadline (`due_at`, the SLA counted from
  receipt, or from approval for a held comment, or from a reopening) and that are decided — answered, or not answered
  and past the deadline at `now` — the share answered by the deadline (first response <= due_at). Not yet due and
  unanswered is undecided and left out. None when nothing is decided.
- **escalated**: comments whose item was ever escalated by the SLA clock (a `queue_item.escalated` audit event).
- **backlog** `{open, oldest_seconds, p50_seconds}`: comments needing an answer whose item is still waiting at
  `now` (held, open, claimed or escalated); their age is now - received.
- **held**: comments whose item was ever held for moderation (an audit event of the item's creation or re-routing
  with state `held`). **approved**: held and then approved (`queue_item.approved`). **rejected**: held and then
  closed without approval (an answer or resolution whose before-state was `held`; a comment deleted on the platform
  while held is not a moderation decision and is not counted).
- **pii**: comments in which the personal-data detector found something (the stored analysis' `pii` spans).
- **sentiment** `{negative, neutral, positive, net}`: counts of comments by sentiment label — the item's (as
  responders corrected it) when the comment has an item, otherwise the classifier's — and net = (positive -
  negative) / (negative + neutral + positive), None when none has one of these labels.
- **emotions**: counts by the classifier's emotion label. **topics**: the ten most frequent topics (the item's, as
  corrected, else the classifier's), count descending then name.
- Labels are read as `service.routing.facts.label_of` reads them: a head's `label`, when it is a non-empty string.

The moderation and escalation history comes from the audit trail, which every item change writes in the same
transaction; its events happen at or after the comment's receipt, so only events since the window's start are read.
"""
