"""secoctl: Seasonal Contrast pre-training as declarative, Kubernetes-native batch experiments."""

__version__ = "0.1.0"
