"""No hidden process state (issue 10 item 4): the parser is reentrant, and importing cnnc
changes nothing in the process or on disk; the runtime's set-up happens on first compile."""

import os
import subprocess
import sys
import threading
from pathlib import Path

from cnnc import frontend

ROOT = Path(__file__).resolve().parent.parent


def test_parses_in_two_threads_neither_wait_nor_mix_their_files(monkeypatch):
    """Thread a is held inside its parse; a parse in thread b still finishes, and each
    result carries its own file (the parser once held the file in shared state, under a
    lock that made b wait for a)."""
    inside, release = threading.Event(), threading.Event()
    real = frontend.Separators.process

    def process(self, stream):
        for token in real(self, stream):
            if token == "held":
                inside.set()
                release.wait(30)
            yield token

    monkeypatch.setattr(frontend.Separators, "process", process)
    results = {}

    def parse(name, file):
        results[file] = frontend.parse(f"network {name}(input: 1x4x4) {{ relu }}\n", file)

    a = threading.Thread(target=parse, args=("held", "a.cnn"))
    b = threading.Thread(target=parse, args=("free", "b.cnn"))
    a.start()
    try:
        assert inside.wait(30)
        b.start()
        b.join(10)
        finished_while_a_parses = not b.is_alive()
    finally:
        release.set()
        a.join(30)
        b.join(30)
    assert finished_while_a_parses
    for file, name in (("a.cnn", "held"), ("b.cnn", "free")):
        network = results[file].networks[0]
        assert network.name == name and network.pos.file == file
        assert network.body[0].pos.file == file


IMPORT_CHANGES_NOTHING = '''
import os, pathlib
import importlib.util
cache = pathlib.Path(importlib.util.find_spec("cnnc").submodule_search_locations[0]) / \
    "kernels" / "__pycache__"
had_entries = bool([*cache.glob("*.nbi"), *cache.glob("*.nbc")])  # what a tidy deletes
touched = []
for name in ("unlink", "write_text", "write_bytes", "mkdir", "touch", "rename", "replace"):
    setattr(pathlib.Path, name, lambda self, *a, _name=name, **k: touched.append(_name))
real_read = pathlib.Path.read_text
def read_text(self, *args, **kwargs):  # the kernel sources changed since the last tidy
    if self.name == "cnnc-kernel-sources.sha256":
        return "stale"
    return real_read(self, *args, **kwargs)
pathlib.Path.read_text = read_text

import cnnc, cnnc.compiler, cnnc.kernels, cnnc.kernels.interpreter, cnnc.runtime
from cnnc.kernels.jit import sources_digest
assert "GOMP_SPINCOUNT" not in os.environ, os.environ["GOMP_SPINCOUNT"]
assert touched == [], touched
assert sources_digest.cache_info().currsize == 0, "importing hashed the kernel sources"
cnnc.runtime.prepare()  # the explicit set-up: spin bound, stale cache files deleted
assert os.environ["GOMP_SPINCOUNT"] == "20000"
# the stamp is written; the package's own cache entries (none where NUMBA_CACHE_DIR has
# always been set) are deleted
assert "write_text" in touched, touched
assert ("unlink" in touched) == had_entries, (had_entries, touched)
'''


def _python(code: str, **env):
    clean = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env},
                          capture_output=True, text=True, timeout=600)


def test_importing_cnnc_sets_nothing_and_touches_no_file():
    """`import cnnc` (and every module of the runtime) used to set GOMP_SPINCOUNT for the
    whole process and to delete kernel cache files; now `runtime.prepare` does, explicitly."""
    done = _python(IMPORT_CHANGES_NOTHING)
    assert done.returncode == 0, done.stderr


COMPILE = '''
import os, cnnc
assert "GOMP_SPINCOUNT" not in os.environ or os.environ["GOMP_SPINCOUNT"] == "7"
cnnc.compile_source("network n(input: 1x4x4) { relu }", progress=False)
print(os.environ["GOMP_SPINCOUNT"])
'''


def test_first_compile_bounds_the_spin_unless_the_user_did():
    assert _python(COMPILE).stdout.split() == ["20000"]
    assert _python(COMPILE, GOMP_SPINCOUNT="7").stdout.split() == ["7"]
