"""erda_sparse: sparse-convolution 3D semantic segmentation from very few labels (ERDA).

Subpackages: `erda_sparse.ops` (the fused ERDA loss; needs only torch). Modules that need
MinkowskiEngine import it through `erda_sparse.minkowski`.
"""

__version__ = "0.1.0"
