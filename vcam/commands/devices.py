"""`vcam devices`: the cameras and virtual-camera backends found, with what each supports."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vcam.devices.virtual_cameras import VirtualCamera


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("devices", help="list cameras and virtual camera backends")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict, is_dataclass

    from vcam.devices.cameras import list_cameras
    from vcam.devices.v4l2 import format_summary
    from vcam.devices.virtual_cameras import list_virtual_camera_backends, probe_virtual_camera

    found = list_cameras()
    cameras = [asdict(camera) if is_dataclass(camera) else dict(camera) for camera in found]  # type: ignore[arg-type]
    virtual_cameras = list_virtual_camera_backends()
    backends = [asdict(backend) for backend in virtual_cameras]
    available, reason = probe_virtual_camera()
    if args.json:
        print(
            json.dumps(
                {
                    "cameras": cameras,
                    "virtual_cameras": backends,
                    "virtual_camera_ready": available,
                    "virtual_camera_detail": reason,
                },
                indent=2,
                default=str,
            )
        )
        return 0
    print("Cameras (sources):")
    if not cameras:
        print("  none found (use --source demo, file:PATH or screen)")
    for camera in found:
        driver = f" [{camera.driver}]" if camera.driver else ""
        print(f"  {camera.label}{driver}")
        for camera_format in camera.formats:
            print(f"    {format_summary(camera_format)}")
    print("\nVirtual camera (sink):")
    for virtual_camera in virtual_cameras:
        print(f"  {describe_virtual_camera(virtual_camera)}")
    print(f"  {'ready' if available else 'not ready'}: {reason}")  # when not ready, the reason says how to fix it
    return 0


def describe_virtual_camera(camera: VirtualCamera) -> str:
    """One line for a person: the backend, the device and its name when there is one, and whether it is ready."""
    where = ", ".join(part for part in (camera.device, f'"{camera.name}"' if camera.name else "") if part)
    head = f"{camera.backend} ({where})" if where else camera.backend
    if camera.available:
        use = f"; use --sink vcam:{camera.device}" if camera.device else ""
        return f"{head}: ready ({camera.detail}){use}" if camera.detail else f"{head}: ready{use}"
    return f"{head}: not available: {camera.detail}" if camera.detail else f"{head}: not available"
