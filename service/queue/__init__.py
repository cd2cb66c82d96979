"""The responder queue: listing, claiming, answering, resolving, reassigning; item transitions; the SLA clock."""
