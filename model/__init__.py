"""The Live2Diff streaming video diffusion model, importable as ``vcam.model``.

- ``stream_attention``: the uni-directional temporal attention of the motion modules and its KV cache
  (``KVCache``, ``StreamCaches``, ``StreamTemporalAttnProcessor``).
- ``depth_mapper``: the small conv network that adds the depth latent to the UNet's ``conv_in`` output.
- ``unet``: ``StreamUNet``, SD1.5's UNet inflated with AnimateDiff motion modules, with ``warmup`` and
  ``stream`` calls; ``tiny_stream_unet()`` builds a tiny random one for tests and benchmarks.
- ``weights``: loading SD1.5, Live2Diff and AnimateDiff weights and LoRAs from local files.

Importing this package is cheap: torch and diffusers are imported by the submodules only.
"""
