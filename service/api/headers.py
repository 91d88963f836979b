"""Request headers that must be sent once: two of them would leave the service choosing one silently."""

from fastapi import Request

from service.errors import MalformedInput


def one_header(request: Request, name: str) -> str | None:
    """The header's value, None when absent; a 400 when it is given more than once (HTTP allows repeating only
    list-valued headers, and Content-Type and its kin are not lists)."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise MalformedInput(f"the request carries {len(values)} {name} headers; send one")
    return values[0] if values else None
