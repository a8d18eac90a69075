"""Data layer: COCO files, masks, images and the instances container."""

from pseudolabel.data.coco import CocoDataset, load_coco, save_json
from pseudolabel.data.images import ImageLoadError, load_image, resolve_image_path
from pseudolabel.data.instances import Instances
from pseudolabel.data.report import Report

__all__ = [
    "CocoDataset",
    "ImageLoadError",
    "Instances",
    "Report",
    "load_coco",
    "load_image",
    "resolve_image_path",
    "save_json",
]
