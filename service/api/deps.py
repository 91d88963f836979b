"""FastAPI dependencies."""

from fastapi import Request

from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.service
