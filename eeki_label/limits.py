"""Default resource limits on untrusted models: one place, no heavy imports (the CLI's option defaults
read them). Each is an option of the commands that load models; ``model_io.LoadLimits`` holds them."""

#: The model file itself. Protobuf cannot serialise a message over 2 GiB.
DEFAULT_MAX_FILE_BYTES = 2 * 1024**3
#: The sum of all stored tensors' declared sizes (initializers plus external data).
DEFAULT_MAX_TENSOR_BYTES = 8 * 1024**3
#: Activations (inputs and tensors computed while running): every declared or inferred working set of
#: one node, and onnxruntime's working memory while the model runs.
DEFAULT_MAX_ACTIVATION_BYTES = 4 * 1024**3
#: Nodes once model-local functions are expanded (onnxruntime and onnx shape inference inline every
#: call): a function calling another twice, 30 levels deep, is a few hundred bytes but 2^30 nodes,
#: which keeps them busy for hours. Graphs exported from real networks have up to some 10^5 nodes;
#: onnxruntime took 3.6 s to load 65,536 plain nodes on one core of the development machine.
DEFAULT_MAX_NODES = 1_000_000
