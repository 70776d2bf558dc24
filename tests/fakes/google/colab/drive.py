"""A fake `google.colab.drive`: mount() creates MyDrive in the mountpoint and logs each call.

FAKE_COLAB_LOG: a file that gets one JSON line per call (tests read it, also from a notebook kernel).
FAKE_COLAB_MODE: "ok" (default), "timeout" (Colab's ValueError) or "eio" (OSError Errno 5).
"""
import errno
import json
import os


def _log(name, **kwargs):
    path = os.environ.get("FAKE_COLAB_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"call": name, **kwargs}) + "\n")


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    _log("mount", mountpoint=mountpoint, timeout_ms=timeout_ms, force_remount=force_remount)
    mode = os.environ.get("FAKE_COLAB_MODE", "ok")
    if mode == "timeout":
        raise ValueError("mount failed: timeout during initial read of root folder")
    if mode == "eio":
        raise OSError(errno.EIO, "Input/output error")
    if os.path.isdir(os.path.join(mountpoint, "MyDrive")):
        print("Drive already mounted at %s; to attempt to forcibly remount, call drive.mount(..., "
              "force_remount=True)." % mountpoint)
        return
    os.makedirs(os.path.join(mountpoint, "MyDrive"))
    print("Mounted at %s" % mountpoint)


def flush_and_unmount(timeout_ms=86400000):
    _log("flush_and_unmount")
