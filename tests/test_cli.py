"""The `kitpkg` entry point: an OS error a user causes is one line on stderr and exit 2, never a traceback."""
import errno

from kitpkg import cli


def test_os_error_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """Permission denied (root in CI cannot provoke it with chmod, so the library call raises it) -> one line, exit 2."""
    import kitpkg.shards.manifest as manifest_mod

    def denied(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "shards" / "manifest.json"))

    monkeypatch.setattr(manifest_mod, "manifest_paths", denied)
    (tmp_path / "shards").mkdir()
    assert cli.main(["verify", str(tmp_path / "shards")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "manifest.json: Permission denied" in err[0] and "Traceback" not in err[0]
