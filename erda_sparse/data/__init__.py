"""Everything between a folder of scans and a batch of MinkowskiEngine-ready tensors.

scannet      the ScanNet v2 raw layout: PLY reader, NYU40 -> 20 classes, names, palette, split lists
cache        the preprocessing cache (one compact file per scene) and `python -m erda_sparse.data.prepare`
weak_labels  the weak-label protocols (ratio, per_class, per_scene, full), saved and loaded per run
transforms   augmentation and voxelization with inverse maps (labeled points survive)
loader       the torch Dataset and collate function
synthetic    procedural rooms written in the same raw layout (the default when no ScanNet is found)
"""
IGNORE_LABEL = -1
