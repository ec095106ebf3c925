"""Transfer cost: NNC (ISO/IEC 15938-17) coding of a model's weights and the energy of shipping it.

* :mod:`eeki_label.transfer.nnc` — :func:`encode_model` / :func:`decode_bitstream` (bytes, seconds);
* :mod:`eeki_label.transfer.fidelity` — :class:`FidelityBound` and how fidelity is measured;
* :mod:`eeki_label.transfer.search` — how quantisation parameters are chosen;
* :mod:`eeki_label.transfer.container` — the bitstream file around the NNC stream;
* :mod:`eeki_label.transfer.scenarios` — one-time, periodic, federated and delta transfer energy
  (J internally; Wh, g CO2 and EUR at the edges).

Nothing heavy is imported here: the codec (``nncodec``) and onnxruntime load on first use.
"""

from __future__ import annotations

__all__ = ["FidelityBound", "NncResult", "encode_model", "decode_bitstream"]


def __getattr__(name: str):
    if name == "FidelityBound":
        from eeki_label.transfer.fidelity import FidelityBound

        return FidelityBound
    if name in ("NncResult", "encode_model", "decode_bitstream"):
        from eeki_label.transfer import nnc

        return getattr(nnc, name)
    raise AttributeError(name)
