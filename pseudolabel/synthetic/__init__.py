"""The embedded synthetic world: procedural scenes of part-based objects."""

from pseudolabel.synthetic.shapes import CLASSES
from pseudolabel.synthetic.world import STYLES, Scene, SceneObject, WorldStyle, render_scene

__all__ = ["CLASSES", "STYLES", "Scene", "SceneObject", "WorldStyle", "render_scene"]
