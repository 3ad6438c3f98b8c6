"""Hot reload in a pod: ConfigMap and Secret volumes as the kubelet lays them out and
updates them, under the real gateway (real Envoy, real sidecar, fake provider).

The kubelet's atomic writer (pkg/volume/util/atomic_writer.go) keeps a volume as
    <dir>/..2026_12_01_14_00_00.123456789/<file>   the payload, one timestamped dir per version
    <dir>/..data -> ..2026_12_01_14_00_00.123456789
    <dir>/<file> -> ..data/<file>
and updates it by writing a new timestamped dir, pointing a new `..data_tmp` symlink at it,
renaming that over `..data`, then deleting the old dir. The user-visible files never
change: only `..data` is renamed, which is what the watcher has to see.
"""

import datetime
import os
import pathlib
import shutil
import time

from harness import backend_yaml, route_yaml
from test_reload import wait_for


class KubeletVolume:
    """A directory that is updated the way the kubelet updates a ConfigMap or Secret volume."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.versions = 0

    def write(self, files):
        self._write(files, visible=list(files))

    def write_nested(self, files):
        """Items with a directory in their path (`<secret>/<key>`, as a projected volume
        maps them): the visible name is the top directory, a symlink into `..data`."""
        self._write(files, visible=sorted({name.split("/")[0] for name in files}))

    def _write(self, files, visible):
        data_link = self.path / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        # A fresh timestamped name each time, as the kubelet makes (it adds random digits).
        self.versions += 1
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.")
        version = self.path / f"{stamp}{self.versions:09d}"
        version.mkdir(mode=0o755)
        for name, text in files.items():
            (version / name).parent.mkdir(parents=True, exist_ok=True)
            (version / name).write_text(text)
        tmp = self.path / "..data_tmp"
        os.symlink(version.name, tmp)
        os.rename(tmp, data_link)
        for name in visible:
            if not (self.path / name).is_symlink():
                os.symlink(f"..data/{name}", self.path / name)
        for stale in self.path.iterdir():
            if not stale.name.startswith(".") and stale.name not in visible:
                stale.unlink()
        if old:
            shutil.rmtree(self.path / old)


def provider_docs(port):
    """The guide's provider without its Secret (which is mounted), and one route."""
    docs = backend_yaml("openai", "OpenAI", port, policy="APIKey").split("\n---\n")
    return [d for d in docs if "kind: Secret" not in d]


def config_map(port, models):
    resources = provider_docs(port) + [route_yaml("route", [(m, [("openai", 0, None)]) for m in models])]
    return {"resources.yaml": "\n---\n".join(resources) + "\n"}


def start(gateway_factory, openai_fake, tmp_path, config_arg):
    config = KubeletVolume(tmp_path / "etc" / "config")
    config.write(config_map(openai_fake.port, ["gpt-4o-mini"]))
    secret = KubeletVolume(tmp_path / "etc" / "secrets" / "openai-key")
    secret.write({"apiKey": "sk-openai-secret"})
    gw = gateway_factory(config_arg(config.path),
                         extra_args=["--secrets-dir", str(secret.path.parent)])
    assert gw.chat("gpt-4o-mini").status_code == 200
    assert openai_fake.last()["headers"]["authorization"] == "Bearer sk-openai-secret"
    return gw, config, secret


def test_config_map_directory_swap_is_reloaded(gateway_factory, openai_fake, tmp_path):
    """`--config <mount>`: the swap brings a new model, without a restart."""
    gw, config, _ = start(gateway_factory, openai_fake, tmp_path, lambda d: d)
    pid = gw.proc.pid
    config.write(config_map(openai_fake.port, ["gpt-4o-mini", "gpt-4.1"]))
    assert wait_for(lambda: gw.chat("gpt-4.1").status_code == 200), gw.read_log()[-3000:]
    assert openai_fake.last()["body"]["model"] == "gpt-4.1"
    assert gw.read_log().count("configuration reloaded") == 1
    assert gw.proc.pid == pid and gw.proc.poll() is None


def test_config_map_file_swap_is_reloaded(gateway_factory, openai_fake, tmp_path):
    """`--config <mount>/resources.yaml`: the file is a symlink that never changes; the swap
    of `..data` behind it must still count."""
    gw, config, _ = start(gateway_factory, openai_fake, tmp_path, lambda d: d / "resources.yaml")
    config.write(config_map(openai_fake.port, ["gpt-4o-mini", "gpt-4.1"]))
    assert wait_for(lambda: gw.chat("gpt-4.1").status_code == 200), gw.read_log()[-3000:]
    assert gw.read_log().count("configuration reloaded") == 1


def test_secret_swap_rotates_the_key(gateway_factory, openai_fake, tmp_path):
    """A rotated Secret: the provider wants the new key and gets it."""
    gw, _, secret = start(gateway_factory, openai_fake, tmp_path, lambda d: d)
    openai_fake.key = "sk-rotated"
    secret.write({"apiKey": "sk-rotated"})
    assert wait_for(lambda: gw.chat("gpt-4o-mini").status_code == 200), gw.read_log()[-3000:]
    assert openai_fake.last()["headers"]["authorization"] == "Bearer sk-rotated"
    assert "sk-rotated" not in gw.read_log()


def test_unrelated_files_next_to_the_mount_do_not_reload(gateway_factory, openai_fake, tmp_path):
    """Files beside the config that it does not read cost no reload."""
    gw, config, _ = start(gateway_factory, openai_fake, tmp_path, lambda d: d / "resources.yaml")
    (config.path / "notes.txt").write_text("x")
    (config.path.parent / "other.yaml").write_text("x")
    time.sleep(1)
    assert "configuration reloaded" not in gw.read_log()


def test_projected_secrets_volume_rotates_twice(gateway_factory, openai_fake, tmp_path):
    """`--secrets-dir` that is itself one (projected) volume holding `<secret>/<key>` items:
    the visible `<secret>` is a symlink into `..data`. Two rotations in a row, as the
    second swap replaces the timestamped dir the first one made."""
    config = KubeletVolume(tmp_path / "config")
    config.write(config_map(openai_fake.port, ["gpt-4o-mini"]))
    secrets = KubeletVolume(tmp_path / "secrets")
    secrets.write_nested({"openai-key/apiKey": "sk-openai-secret"})
    gw = gateway_factory(config.path, extra_args=["--secrets-dir", str(secrets.path)])
    assert gw.chat("gpt-4o-mini").status_code == 200
    for key in ("sk-rotated-1", "sk-rotated-2"):
        openai_fake.key = key
        secrets.write_nested({"openai-key/apiKey": key})
        assert wait_for(lambda: gw.chat("gpt-4o-mini").status_code == 200), gw.read_log()[-3000:]
        assert openai_fake.last()["headers"]["authorization"] == f"Bearer {key}"
