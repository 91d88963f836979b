"""FastAPI dependencies."""

from fastapi import Request

from service.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    """Async on purpose: FastAPI would run a plain function in a worker thread, one hop per request."""
    return request.app.state.service
