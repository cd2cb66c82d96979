"""Notifications to people: who is told what, through which channel, and when.

An item change (`events.item_changed`, called by every queue item transition) becomes `Notification` rows, one per
recipient and channel, as the subscriptions and the members' preferences say; `batching.flush` (a periodic job)
turns each recipient's waiting rows into one outbox message once the burst is over (or at their digest hour),
rendered for the channel's kind by `render`. Admins configure channels (`channels`) and subscriptions and
preferences (`admin`); the outbox (service.outbound) delivers the messages.
"""
