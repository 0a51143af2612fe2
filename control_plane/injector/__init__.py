"""The Kubernetes sidecar injector: ``sidemesh webhook`` (a mutating admission webhook) and
``sidemesh inject`` (offline), both built on ``patch.plan_injection``."""

from .config import InjectorConfig, Resources
from .patch import Injection, apply_patch, plan_injection

__all__ = ["InjectorConfig", "Resources", "Injection", "plan_injection", "apply_patch"]
