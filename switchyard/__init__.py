"""Switchyard: a Kubernetes-native gateway to large language models."""

__version__ = "0.1.0"
