"""streamproc: accountable face-search pipeline for body-camera video.

Importing the package stays light: heavy libraries (cv2, onnxruntime, av, hnswlib)
are imported by the modules that use them.
"""

__version__ = "0.1.0"
