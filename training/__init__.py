"""training — the segmenter: dataset format and importers, the atlas cohort, U-Net and ENet (MXNet Gluon),
losses, metrics, the training entry point (local and SageMaker), evaluation, MC-dropout and export.

Deployed as the SageMaker training `source_dir` (with its own requirements.txt); imports numpy, mxnet and the
shared contract module only.
"""
