"""`vcam doctor`: everything the app needs, checked one by one, each problem with the command that fixes it.

The checks are the installers' own (Python, torch and the GPU, the virtual camera driver and its
Secure Boot signing, the webcam, segmentation, the tray host, free disk, config, log folder), so a
fix is always either an installer run or one exact command. A check never raises: a check that
cannot run reports that as its problem. Those are what the app needs (`required`, the exit status of
`vcam doctor --strict`); each diffusion style's weights are optional (a style needs them, the app does not).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vcam.config import Config

log = logging.getLogger(__name__)

#: this app's distribution name (pyproject.toml [project] name)
DISTRIBUTION = "live2diff-vcam"
MIN_PYTHON = (3, 10)
#: free space wanted where model weights are cached (a diffusion style's weights are several GB)
MIN_FREE_BYTES = 10 * 1024**3
#: the PyTorch wheel index for CUDA builds on Windows (PyPI's Windows wheels are CPU-only)
WINDOWS_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
#: where the module signing key lives that DKMS (Debian/Ubuntu/Arch) or akmods (Fedora) uses
MOK_KEYS = ("/var/lib/dkms/mok.pub", "/var/lib/shim-signed/mok/MOK.der", "/etc/pki/akmods/certs/public_key.der")
SECURE_BOOT_UNKNOWN, SECURE_BOOT_ON, SECURE_BOOT_OFF = "unknown", "enabled", "disabled"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, whether it is fine, what was found, how to fix it, and
    whether the app needs it (False: only an optional part needs it, e.g. one diffusion style's weights)."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- commands shown to the user ---------------------------------------------------------------


def format_command(args: Sequence[str], platform: str | None = None) -> str:
    """A command line as the user types it in their shell (cmd/PowerShell quoting on Windows)."""
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        return subprocess.list2cmdline(list(args))
    return shlex.join(args)


def installers_dir() -> Path | None:
    """The source checkout's installers/ folder (the app is installed editable from it), if there is one."""
    candidate = Path(__file__).resolve().parent.parent / "installers"
    return candidate if candidate.is_dir() else None


def _installer(relative: str) -> str:
    folder = installers_dir()
    return str(folder / relative) if folder else f"installers/{relative} (in the live2diff-vcam source folder)"


def linux_driver_fix() -> str:
    """The command that installs and loads v4l2loopback (idempotent)."""
    return f"sudo {_installer('linux/setup-virtual-camera.sh')}"


def app_install_fix(platform: str | None = None) -> str:
    """The command that (re)installs the app and torch for this OS."""
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        return f"powershell -ExecutionPolicy Bypass -File {_installer('windows/install.ps1')}"
    if platform == "darwin":
        return _installer("macos/install.sh")
    return _installer("linux/install.sh")


def declared_requirement(name: str) -> str:
    """`name` with the version range this app declares for it (pyproject.toml, read from the installed metadata)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        return name
    for line in declared:
        requirement = line.split(";", 1)[0].replace(" ", "")
        if re.match(rf"{re.escape(name)}(?![A-Za-z0-9._-])", requirement, re.IGNORECASE):
            return requirement
    return name


def pip_fix(*requirements: str) -> str:
    """`<this python> -m pip install ...` for the environment the app runs in."""
    return format_command([sys.executable, "-m", "pip", "install", *requirements])


# --- the checks ------------------------------------------------------------------------------------


def check_python(version: tuple[int, ...] | None = None) -> Check:
    version = tuple(sys.version_info[:3]) if version is None else version
    text = ".".join(str(part) for part in version)
    if version[:2] >= MIN_PYTHON:
        return Check("python", True, f"{text} ({sys.executable})")
    wanted = ".".join(str(part) for part in MIN_PYTHON)
    return Check("python", False, f"{text} is too old: {wanted} or newer is needed", app_install_fix())


def _nvidia_gpu_present() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def check_torch() -> list[Check]:
    """torch itself, the device it will run on, and xformers on CUDA."""
    try:
        import torch
    except ImportError as error:
        return [Check("torch", False, f"not importable: {error}", app_install_fix())]
    checks = [Check("torch", True, f"{torch.__version__}")]
    hip = getattr(torch.version, "hip", None)
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        runtime = f"ROCm {hip}" if hip else f"CUDA {torch.version.cuda}"
        gib = properties.total_memory / 1024**3
        checks.append(Check("gpu", True, f"{runtime}: {properties.name} ({gib:.0f} GiB)"))
        if not hip:
            checks.append(check_xformers())
        return checks
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        checks.append(Check("gpu", True, "Apple GPU (MPS)"))
        return checks
    if _nvidia_gpu_present():
        if sys.platform == "win32":
            fix = pip_fix("--force-reinstall", "torch", "--index-url", WINDOWS_CUDA_INDEX)
        else:
            fix = pip_fix("--force-reinstall", "torch")
        detail = f"an NVIDIA GPU is present but torch {torch.__version__} is a CPU build"
        checks.append(Check("gpu", False, detail, fix))
        return checks
    checks.append(
        Check("gpu", True, "none: CPU only (classic styles run live; diffusion styles are far from real time)")
    )
    return checks


def check_xformers() -> Check:
    try:
        import xformers
    except ImportError:
        return Check("xformers", False, "not installed (faster attention on CUDA)", pip_fix("xformers"))
    return Check("xformers", True, str(getattr(xformers, "__version__", "installed")))


def secure_boot_state() -> str:
    """'enabled', 'disabled' or 'unknown' (no mokutil, or no EFI), from `mokutil --sb-state`."""
    mokutil = shutil.which("mokutil")
    if mokutil is None:
        return SECURE_BOOT_UNKNOWN
    try:
        result = subprocess.run([mokutil, "--sb-state"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return SECURE_BOOT_UNKNOWN
    output = result.stdout + result.stderr
    if "SecureBoot enabled" in output:
        return SECURE_BOOT_ON
    if "SecureBoot disabled" in output:
        return SECURE_BOOT_OFF
    return SECURE_BOOT_UNKNOWN


def _module_installed(name: str) -> bool:
    modinfo = shutil.which("modinfo") or next(
        (path for path in ("/sbin/modinfo", "/usr/sbin/modinfo") if Path(path).exists()), None
    )
    if modinfo is None:
        return False
    try:
        return subprocess.run([modinfo, name], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _first_param(module: Path, name: str) -> str | None:
    """The first value of a module parameter ("Y" from "Y,N,N"), or None if unreadable."""
    try:
        return (module / "parameters" / name).read_text().strip().split(",")[0]
    except OSError:
        return None


def check_v4l2loopback(
    sys_root: Path = Path("/"),
    secure_boot: Callable[[], str] = secure_boot_state,
    module_installed: Callable[[str], bool] = _module_installed,
) -> Check:
    """The Linux virtual camera driver: loaded, its devices, exclusive_caps, and Secure Boot when it is not."""
    module = sys_root / "sys" / "module" / "v4l2loopback"
    fix = linux_driver_fix()
    if not module.is_dir():
        installed = module_installed("v4l2loopback")
        state = secure_boot()
        detail = "module not loaded" + (" (installed, not loaded)" if installed else " (not installed)")
        if installed and state == SECURE_BOOT_ON:
            key = next((key for key in MOK_KEYS if (sys_root / key.lstrip("/")).is_file()), MOK_KEYS[0])
            detail += "; Secure Boot is enabled: the module must be signed with a key enrolled in MOK"
            fix = f"sudo mokutil --import {key}, reboot and pick 'Enroll MOK', then: {fix}"
        elif state == SECURE_BOOT_ON:
            detail += "; Secure Boot is enabled (the installer explains the module signing step)"
        return Check("virtual camera driver", False, f"v4l2loopback {detail}", fix)
    from vcam.devices.v4l2 import SYSFS_VIDEO4LINUX
    from vcam.devices.virtual_cameras import list_loopback_devices

    devices = list_loopback_devices(sys_root / SYSFS_VIDEO4LINUX.relative_to("/"))
    if not devices:
        return Check("virtual camera driver", False, "v4l2loopback is loaded but has no device", fix)
    names = ", ".join(f"{device.device} {device.name!r}" for device in devices)
    detail = f"v4l2loopback: {names}"
    caps = _first_param(module, "exclusive_caps")
    if caps in ("Y", "1"):
        detail += "; exclusive_caps=1 (Chrome/WebRTC list it)"
    elif caps in ("N", "0"):
        detail += (
            "; exclusive_caps=0 (the Zoom snap lists it; Chrome/WebRTC may not: "
            "re-run the installer without --no-exclusive-caps)"
        )
    return Check("virtual camera driver", True, detail)


def check_virtual_camera() -> Check:
    """What pyvirtualcam can send to (every OS)."""
    from vcam.devices.virtual_cameras import probe_virtual_camera, virtual_camera_fix

    ok, text = probe_virtual_camera()
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return Check("virtual camera", ok, first_line, None if ok else virtual_camera_fix())


def check_webcam() -> Check:
    from vcam.devices.cameras import list_cameras

    cameras = list_cameras(with_formats=False)
    if cameras:
        return Check("webcam", True, "; ".join(camera.label for camera in cameras[:4]))
    return Check(
        "webcam",
        False,
        "no webcam found (or every one is in use by another app)",
        'connect a webcam and close apps that hold it, or set [camera] source = "demo", "screen" or "file:PATH"',
    )


def check_segmentation(config: Config) -> list[Check]:
    from vcam.errors import UserError
    from vcam.segment.segmenter import import_mediapipe, resolve_model_path

    checks: list[Check] = []
    try:
        mediapipe = import_mediapipe()
        checks.append(Check("mediapipe", True, str(getattr(mediapipe, "__version__", "installed"))))
    except UserError as error:
        checks.append(Check("mediapipe", False, str(error), pip_fix(declared_requirement("mediapipe"))))
    try:
        path = resolve_model_path(config.segment.model)
        checks.append(Check("segmentation model", True, str(path)))
    except UserError as error:
        where = _config_path(config)
        fix = f'set [segment] model = "" (the bundled model) in {where}, or reinstall: {app_install_fix()}'
        checks.append(Check("segmentation model", False, str(error), fix))
    return checks


def check_styles(config: Config) -> list[Check]:
    """Classic styles in one line; each diffusion style on its own optional line with its download command."""
    from vcam.styles import list_styles

    styles = list_styles(config)
    checks: list[Check] = []
    always = [info.name for info in styles if info.kind == "classic"]
    if always:
        checks.append(Check("classic styles", True, f"{len(always)} ready: {', '.join(always)}"))
    for info in styles:
        if info.kind != "diffusion":
            continue
        if info.ready:
            checks.append(Check(f"style {info.name}", True, f"weights on disk ({info.title})", required=False))
        else:
            fix = format_command(["vcam", "models", "download", info.name])
            detail = info.detail if info.error is not None else f"weights not downloaded ({info.title})"
            checks.append(Check(f"style {info.name}", False, detail, fix, required=False))
    return checks


def check_tray_host() -> Check:
    """Whether a system tray can show the tray's icon (`vcam.tray.host`, the tray's own detection)."""
    from vcam.tray.host import TRAY_HOST_FIX, find_tray_host

    host = find_tray_host()
    if host is None:
        return Check("tray host", True, "the menu bar / notification area")
    return Check("tray host", not host.missing, host.describe(), TRAY_HOST_FIX if host.missing else None)


def models_cache_dir(config: Config) -> Path:
    """Where weights go: [models] cache_dir, else the Hugging Face cache."""
    if config.models.cache_dir:
        return Path(config.models.cache_dir).expanduser()
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        return Path(home) / "hub"


def check_disk(config: Config, min_free: int = MIN_FREE_BYTES) -> Check:
    folder = models_cache_dir(config)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    gb = free / 1e9
    detail = f"{gb:.1f} GB free at {folder}"
    if free >= min_free:
        return Check("free disk", True, detail)
    fix = (
        f"free {(min_free - free) / 1e9:.1f} GB on that disk, or set [models] cache_dir in {_config_path(config)} "
        f"to a folder on a disk with {min_free / 1e9:.0f} GB free"
    )
    return Check("free disk", False, f"{detail} ({min_free / 1e9:.0f} GB wanted for the weights)", fix)


def _config_path(config: Config) -> Path:
    from vcam.paths import config_file

    return config.path if config.path is not None else config_file()


def check_config(path: Path | None = None) -> tuple[Check, Config]:
    """Load the config; on an error, report it and go on with the defaults."""
    from vcam.config import Config, load_config
    from vcam.errors import UserError
    from vcam.paths import config_file

    try:
        config = load_config(path)
    except UserError as error:
        where = path if path is not None else config_file()
        fix = f"edit {where} as the message says, or move it away to use the defaults"
        return Check("config", False, str(error), fix), Config()
    if config.path is None:
        return Check("config", True, f"defaults (no file at {config_file()})"), config
    return Check("config", True, f"valid: {config.path}"), config


def check_log_dir() -> Check:
    from vcam.paths import log_dir

    folder = log_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-", delete=True) as probe:
            probe.write(b"vcam doctor: the log folder is writable\n")
    except OSError as error:
        fix = format_command(["chmod", "u+rwx", str(folder)]) if sys.platform != "win32" else None
        return Check("log folder", False, f"{folder} is not writable: {error.strerror or error}", fix)
    return Check("log folder", True, str(folder))


# --- all of them -------------------------------------------------------------------------------------


def check_latency() -> Check:
    """The last measured latency and the audio delay it asks for, or how to measure it (never a problem)."""
    from vcam.latency import MEASURE_COMMAND, audio_delay_ms, last_measurement_path, load_measurement

    measurement = load_measurement()
    if measurement is None:
        return Check("latency", True, f"not measured yet: run `{MEASURE_COMMAND}` (or `vcam run` for a while)")
    delay = audio_delay_ms(measurement.latency_ms_p50)
    return Check(
        "latency",
        True,
        f"{measurement.latency_ms_p50:.0f} ms p50, {measurement.latency_ms_p95:.0f} ms p95 at "
        f"{measurement.fps_content:.1f} styled fps ({measurement.style}, {measurement.how}, "
        f"{measurement.measured_at}; {last_measurement_path()}): delay your microphone by about {delay} ms "
        "(OBS: Advanced Audio Properties > Sync Offset), plus [output] audio_offset_ms",
    )


def _guarded(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; a check that cannot run becomes a failed line instead of an exception."""
    try:
        result = check()
    except ImportError as error:
        log.debug("check %s cannot import", name, exc_info=True)
        return [Check(name, False, f"cannot check: {error}", app_install_fix())]
    except Exception as error:  # a broken check must not hide the others
        log.warning("check %s failed", name, exc_info=True)
        return [Check(name, False, f"the check failed: {type(error).__name__}: {error}")]
    return result if isinstance(result, list) else [result]


def run_checks(config: Config | None = None, config_path: Path | None = None) -> list[Check]:
    """Every check, in report order. Without `config`, the user's config (or `config_path`) is loaded and checked."""
    checks: list[Check] = []
    if config is None:
        config_check, config = check_config(config_path)
        checks.append(config_check)
    else:
        where = config.path or "defaults"
        checks.append(Check("config", True, f"given: {where}"))
    loaded: Config = config
    checks += _guarded("python", check_python)
    checks += _guarded("torch", check_torch)
    driver_ok = True
    if sys.platform.startswith("linux"):
        driver = _guarded("virtual camera driver", check_v4l2loopback)
        driver_ok = all(check.ok for check in driver)
        checks += driver
    if driver_ok:  # on Linux a missing driver is already the reason; do not report it twice
        checks += _guarded("virtual camera", check_virtual_camera)
    checks += _guarded("webcam", check_webcam)
    checks += _guarded("segmentation", lambda: check_segmentation(loaded))
    checks += _guarded("tray host", check_tray_host)
    checks += _guarded("styles", lambda: check_styles(loaded))
    checks += _guarded("free disk", lambda: check_disk(loaded))
    checks += _guarded("log folder", check_log_dir)
    checks += _guarded("latency", check_latency)
    return checks
