"""live2diff-vcam: a virtual camera that restyles your webcam live with Live2Diff streaming video diffusion.

The package is one namespace made of three folders: `vcam` (the runtime: sources, the frame loop,
sinks, config, CLI), `vcam.model` (the streaming diffusion model) and `vcam.tray` (the tray icon).
Heavy libraries (torch, diffusers, mediapipe) are imported lazily, so `import vcam` is instant.
"""

__version__ = "0.1.0"
