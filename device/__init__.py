"""Device side of instrument-ai: the numpy MFCC frontend, the bundle reader and the streaming runtime.

Everything under this package imports only numpy, the TFLite interpreter
(ai-edge-litert, else tflite-runtime, else tensorflow.lite), flatbuffers,
sounddevice and soundfile, so that a Raspberry Pi installs it in seconds.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
