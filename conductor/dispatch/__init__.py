"""The transports that run the service's jobs (conductor.service.ports.Dispatcher).

- celery: distributed mode; tasks go to the broker by name, `celery -A workers worker` runs them.
- embedded: `conductor serve`; an in-process queue, worker threads and a scheduler.
- inline: tests and scripts; every job runs at once, in the caller's thread.
"""
