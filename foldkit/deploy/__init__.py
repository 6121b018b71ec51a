"""Deployment: YOLO pre- and post-processing, the detect command, Triton model repositories."""
