"""GET /v1/models: the manifests in the model store, and which one is served."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from service.api.deps import get_state
from service.runtime.store import ModelStoreError, list_versions, read_entry
from service.state import ServiceState

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(state: Annotated[ServiceState, Depends(get_state)]) -> dict[str, Any]:
    s = state.settings
    served = state.model.manifest.version if state.model else None
    models = []
    for version in list_versions(s.model_store, s.model_name):
        try:
            manifest = read_entry(s.model_store, s.model_name, version).manifest
        except ModelStoreError as exc:
            models.append({"name": s.model_name, "version": version, "served": False, "error": str(exc)})
            continue
        models.append({**manifest.model_dump(mode="json"), "served": version == served and state.ready})
    return {"models": models}
