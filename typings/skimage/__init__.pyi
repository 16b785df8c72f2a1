# Minimal local stub: streamproc only uses skimage.data's bundled sample images.
