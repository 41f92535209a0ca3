"""A freedesktop notification server for tests: owns org.freedesktop.Notifications on the session bus and
appends each Notify call's summary and body as one JSON line to the file in argv[1]; touches argv[1].ready
once it owns the name. Runs under the system Python (Debian's python3-gi)."""

import json
import sys
from pathlib import Path

from gi.repository import Gio, GLib

INTERFACE = """
<node><interface name="org.freedesktop.Notifications">
  <method name="Notify">
    <arg type="s" direction="in"/><arg type="u" direction="in"/><arg type="s" direction="in"/>
    <arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="as" direction="in"/>
    <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/><arg type="u" direction="out"/>
  </method>
  <method name="GetServerInformation">
    <arg type="s" direction="out"/><arg type="s" direction="out"/><arg type="s" direction="out"/>
    <arg type="s" direction="out"/>
  </method>
  <method name="GetCapabilities"><arg type="as" direction="out"/></method>
</interface></node>
"""
output = Path(sys.argv[1])


def on_call(connection, sender, path, interface, method, parameters, invocation):
    if method == "Notify":
        _app, _replaces, _icon, summary, body = parameters.unpack()[:5]
        with output.open("a") as file:
            file.write(json.dumps({"summary": summary, "body": body}) + "\n")
        invocation.return_value(GLib.Variant("(u)", (1,)))
    elif method == "GetServerInformation":
        invocation.return_value(GLib.Variant("(ssss)", ("test", "vcam", "1", "1.2")))
    else:
        invocation.return_value(GLib.Variant("(as)", (["body"],)))


def on_bus(connection, name):
    node = Gio.DBusNodeInfo.new_for_xml(INTERFACE)
    connection.register_object("/org/freedesktop/Notifications", node.interfaces[0], on_call)


def on_name(connection, name):
    Path(f"{output}.ready").touch()


Gio.bus_own_name(Gio.BusType.SESSION, "org.freedesktop.Notifications", 0, on_bus, on_name, None)
GLib.MainLoop().run()
