"""The jobs' backbone builder and input transform: the torch side of published weights owns them."""

from secoctl.weights.backbone import build_backbone, reflectance_input_class, resnet

ReflectanceInput = reflectance_input_class()

__all__ = ["ReflectanceInput", "build_backbone", "resnet"]
