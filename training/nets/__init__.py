"""The segmentation networks (U-Net, ENet) as Gluon HybridBlocks built from named blocks.

`blocks` holds what both share, `unet` and `enet` the two architectures, `registry` builds a network by name and
loads its parameters. Nothing here imports back up the package: blocks ← unet, enet ← registry.
"""

from training.nets.blocks import SegmentationNet, SpatialDropout, check_input_shape, nearest_valid_sizes
from training.nets.registry import NETWORKS, build_network, count_parameters, load_params

__all__ = ["NETWORKS", "SpatialDropout", "SegmentationNet", "build_network", "check_input_shape",
           "nearest_valid_sizes", "load_params", "count_parameters"]
