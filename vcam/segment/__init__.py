"""Person segmentation and compositing: MediaPipe Selfie Segmentation, temporal smoothing, guided upsampling.

`SegmentationStage` is what the runtime's work thread uses; `DelayLine` aligns a translator that
is frames late with the mask of its input. mediapipe is imported only when a mode needs the model.
"""

from vcam.segment.delay import DelayedEntry, DelayLine
from vcam.segment.stage import SEGMENT_MODES, SegmentationStage, check_mode

__all__ = ["SEGMENT_MODES", "DelayLine", "DelayedEntry", "SegmentationStage", "check_mode"]
