"""Runtime: storage, job context, job execution (and, with the service, the queue and runners)."""
