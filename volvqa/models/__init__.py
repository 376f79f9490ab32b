"""Answerers: prior, grounded, encoder3d, and users' plug-ins."""
from volvqa.models.base import PluginAnswerer, Prediction, load_plugin

__all__ = ["PluginAnswerer", "Prediction", "load_plugin"]
