"""Import TensorFlow with the Keras 2 API (tf-keras) that HDF5 models from Keras 2 need.

``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` resolve to tf-keras, so that the
TFLite converter accepts models loaded by ``tf_keras``. It must be set before
TensorFlow is first imported, so every converter module imports TensorFlow
through ``import_tensorflow``.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

from converters.deps import require

logger = logging.getLogger(__name__)


def import_tensorflow() -> ModuleType:
    """Return the ``tensorflow`` module, imported with tf-keras as ``tf.keras``."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "load Keras models and write TFLite files", package="tensorflow-cpu")


def import_tf_keras() -> ModuleType:
    """Return the ``tf_keras`` module (Keras 2), which reads Keras 2 HDF5 files."""
    import_tensorflow()
    return require("tf_keras", "load Keras 2 HDF5 models", package="tf-keras")
