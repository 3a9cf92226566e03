"""The jobs' backbone builder and input transform: the torch side of published weights owns them."""

from secoctl.weights.backbone import ReflectanceInput, build_backbone

__all__ = ["ReflectanceInput", "build_backbone"]
