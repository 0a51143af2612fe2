"""The model repository on disk and the loaded models in memory.

Layout: ``<repo>/<model>/<version>/model.onnx`` with numeric versions and an optional
``<repo>/<model>/config.json``. ``ModelRegistry`` answers "which loaded version serves this
request" (the highest version when none is named) and holds per-version readiness.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .batcher import DynamicBatcher
from .config import ModelConfig, load_model_config
from .errors import ConfigError, ModelNotFound, ModelNotReady
from .runtime import OnnxModel

__all__ = ["VersionEntry", "ModelEntry", "ModelRegistry", "scan_repository"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class VersionEntry:
    """One version's state: ``loading`` until warmed up, then ``ready`` or ``failed``."""

    model_name: str
    version: str
    path: Path
    state: str = "loading"
    error: str | None = None
    model: OnnxModel | None = None
    batcher: DynamicBatcher | None = None
    max_batch_size: int = 0  # effective: 0 when batching is off or the model cannot batch

    @property
    def ready(self) -> bool:
        return self.state == "ready"


@dataclass
class ModelEntry:
    name: str
    config: ModelConfig
    versions: dict[str, VersionEntry] = field(default_factory=dict)

    @property
    def latest(self) -> VersionEntry:
        return self.versions[max(self.versions, key=int)]


def scan_repository(root: Path) -> dict[str, ModelEntry]:
    """Find every model and version; bad config.json files raise ``ConfigError``."""
    if not root.is_dir():
        raise ConfigError(f"repository: {root} is not a directory")
    models: dict[str, ModelEntry] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        versions = sorted(
            (v for v in model_dir.iterdir() if v.is_dir() and v.name.isdigit() and (v / "model.onnx").is_file()),
            key=lambda v: int(v.name),
        )
        if not versions:
            continue
        if not _NAME.match(model_dir.name):
            raise ConfigError(f"repository: model name {model_dir.name!r} must be letters, digits, '_', '.' or '-'")
        entry = ModelEntry(model_dir.name, load_model_config(model_dir / "config.json"))
        for v in versions:
            entry.versions[str(int(v.name))] = VersionEntry(model_dir.name, str(int(v.name)), v / "model.onnx")
        models[entry.name] = entry
    return models


class ModelRegistry:
    """Lookup of model versions by name; shared by the REST and gRPC front ends."""

    def __init__(self, models: dict[str, ModelEntry]) -> None:
        self.models = models

    def model(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"unknown model {name!r}; this server has: {known}")
        return entry

    def version(self, name: str, version: str | None) -> VersionEntry:
        """The named version, or the highest one when ``version`` is empty."""
        entry = self.model(name)
        if not version:
            return entry.latest
        found = entry.versions.get(version)
        if found is None:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; it has: {', '.join(entry.versions)}")
        return found

    def ready_version(self, name: str, version: str | None) -> VersionEntry:
        found = self.version(name, version)
        if not found.ready:
            why = f"failed to load: {found.error}" if found.state == "failed" else "is still loading"
            raise ModelNotReady(f"model {name!r} version {found.version} {why}")
        return found

    def all_versions(self) -> list[VersionEntry]:
        return [v for m in self.models.values() for v in m.versions.values()]

    @property
    def ready(self) -> bool:
        """Every version loaded (Triton's strict readiness): a broken model keeps the
        server out of rotation, loudly, instead of serving half a repository."""
        return all(v.ready for v in self.all_versions())
