"""The dlib models, loaded once per worker process and released between stages.

The 68-point shape predictor is the file shipped in the PyPI package
``face-recognition-models``; it is trained on iBUG 300-W, whose licence excludes commercial
use. Its ``__init__`` imports ``pkg_resources``, which setuptools 81 and later no longer
provide, so the model file is located with ``importlib.util.find_spec`` without importing the
package.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

from daskavatar.exceptions import DaskAvatarError
from daskavatar.jobs.memory import release_memory

logger = logging.getLogger(__name__)

SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def model_path(filename: str) -> str:
    """Return the path of a model file shipped in ``face-recognition-models``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DaskAvatarError("the package face-recognition-models is not installed; "
                              "run: pip install face-recognition-models")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
    if not os.path.exists(path):
        raise DaskAvatarError(f"model file {path} not found; reinstall face-recognition-models")
    return path


@functools.lru_cache(maxsize=1)
def face_detector():
    """Return dlib's HOG + linear SVM frontal face detector."""
    import dlib
    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def shape_predictor():
    """Return dlib's 68-point shape predictor (about 100 MB in memory)."""
    import dlib
    logger.info("Loading the 68-point shape predictor")
    return dlib.shape_predictor(model_path(SHAPE_PREDICTOR_FILE))


@functools.lru_cache(maxsize=1)
def cnn_face_detector():
    """Return dlib's CNN (MMOD) face detector, which also finds faces turned to the side."""
    import dlib
    logger.info("Loading the CNN face detector")
    return dlib.cnn_face_detection_model_v1(model_path(CNN_DETECTOR_FILE))


@functools.lru_cache(maxsize=1)
def face_descriptor_model():
    """Return dlib's ResNet face descriptor model (128-D; adds about 26 MiB of RSS, measured)."""
    import dlib
    logger.info("Loading the face descriptor model")
    return dlib.face_recognition_model_v1(model_path(DESCRIPTOR_FILE))


def release_models() -> None:
    """Drop the cached models and return freed heap memory to the operating system.

    Called on every worker after the map stage, so the NeRF fits of the reduce stage start
    with the predictor's memory returned.
    """
    face_detector.cache_clear()
    shape_predictor.cache_clear()
    cnn_face_detector.cache_clear()
    face_descriptor_model.cache_clear()
    release_memory()
