"""Profiling stages: static (from the graph) and runtime (onnxruntime)."""
