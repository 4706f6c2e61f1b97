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
