"""The Live2Diff streaming video diffusion model, importable as ``vcam.model``.

- ``stream_attention``: the uni-directional temporal attention of the motion modules and its KV cache
  (``KVCache``, ``StreamCaches``, ``StreamTemporalAttnProcessor``).
- ``depth_mapper``: the small conv network that adds the depth latent to the UNet's ``conv_in`` output.
- ``unet``: ``StreamUNet``, SD1.5's UNet inflated with AnimateDiff motion modules, with ``warmup`` and
  ``stream`` calls; ``tiny_stream_unet()`` builds a tiny random one for tests and benchmarks.
- ``weights``: loading SD1.5, Live2Diff and AnimateDiff weights and LoRAs from local files.
- ``pipeline``: ``StreamPipeline``, the streaming video-to-video algorithm, one call per new frame;
  ``similar_filter``: ``SimilarFrameFilter``, which skips near-identical frames.
- ``loading``: ``PipelineSpec``, device/dtype resolution, loading a style's models and assembling a pipeline;
  ``pool``: ``ModelPool``, models shared between the pipelines of several styles.

Importing this package is cheap: torch and diffusers are imported by the submodules only.
"""
