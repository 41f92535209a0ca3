"""`vcam eval`: temporal stability, CLIP and depth metrics of styles on clips (the Live2Diff paper's table)."""
