"""The devices on this machine: cameras to read from, virtual cameras to send to, and the V4L2 ioctls asking them.

- `cameras`: the cameras a source can open (`list_cameras`), and opening one through OpenCV.
- `v4l2`: Linux's video nodes in sysfs, the one loopback rule, and every V4L2 ioctl (driver, formats).
- `virtual_cameras`: the virtual cameras a sink can send to (v4l2loopback, OBS, Unity Capture) and how to get one.
"""
