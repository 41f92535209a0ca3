"""Person segmentation and compositing."""
