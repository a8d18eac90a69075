"""Evaluation: COCO mask AP, boundary AP, and pseudo-mask quality against ground truth."""
