"""SeSAM (seed 004): semantic segmentation from points, scribbles and coarse masks.

* ``labels``: label maps (0 background, 255 ignore) from COCO instances, and the simulated weak
  labels (point, scribble, coarse), read and written as PNG;
* ``sam_maps``: SAM pseudo-label maps: per class, connected components of the weak label,
  points sampled on each component's skeleton, multimask decoding, selection by agreement
  with the weak label, painting.
"""
