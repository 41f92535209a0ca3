"""The tray icon and its menu (importable as `vcam.tray`)."""
