"""training — the segmenter: dataset format and importers, the atlas cohort, U-Net and ENet (MXNet Gluon),
losses, metrics, the training entry point (local and SageMaker), evaluation, MC-dropout and export.

Deployed as the SageMaker training `source_dir` (with its own requirements.txt): the training path imports
numpy, scipy, pillow, mxnet and the shared contract/storage modules only. The importers and the atlas cohort
(nibabel, nilearn) run on the operator's machine, not in the training container.
"""

# Size the OpenMP/BLAS pools from the cores this process may use before any submodule loads MXNet, which
# reads OMP_NUM_THREADS once, at load (see training/threads.py).
from training.threads import configure_threads as _configure_threads

_configure_threads()
