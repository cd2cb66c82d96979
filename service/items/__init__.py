"""Queue items' lifecycle: every state transition of an item, audited (used by routing, the queue and the directory)."""
