"""Background work: job rows (the outbox), the inline and arq backends, processing, dead letters, re-classification."""
