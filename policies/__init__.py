"""s2r.policies: networks, algorithms, storage, training loops and ONNX export."""
