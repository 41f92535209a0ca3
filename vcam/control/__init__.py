"""The camera's local control API: every `vcam run` serves it on 127.0.0.1 (see `vcam.control.api`)."""
