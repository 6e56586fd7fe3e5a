"""The correlation id of the work in progress: an HTTP request's id, or the id carried by an event.

Set by the gateway/function middleware for a request and by the consumer loop for an event, read when
publishing (so caused events carry it) and by the JSON log formatter.
"""

from contextvars import ContextVar

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
