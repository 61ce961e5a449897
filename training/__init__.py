"""training — the segmenter: dataset format and importers, the atlas cohort, U-Net and ENet (MXNet Gluon),
losses, metrics, the training entry point (local and SageMaker), evaluation, MC-dropout and export.

Deployed as the SageMaker training `source_dir` (with its own requirements.txt): the training path imports
numpy, scipy, pillow, mxnet and the shared contract/storage modules only. The importers and the atlas cohort
(nibabel, nilearn) run on the operator's machine, not in the training container.
"""
