"""Grammar fuzzing: seeded mutants of examples/*.cnn through the `cnnc check` path.

Every mutant must give a network or a clean CnncError (that format_error can
render), never another exception, a hang over 2 s or a memory blow-up. The
mutator is small and seeded (hypothesis is not a dependency): token swaps,
replacements, deletions and duplications, huge numbers, deep nesting of
parentheses, operators, concat and add, odd imports and random bytes.

The 500 mutants run in one child process (`python tests/test_fuzz.py SEED COUNT
DIR`) with its address space limited, so a blow-up is a MemoryError there and
not a swapping machine; each mutant has 2 s of SIGALRM. A failing mutant is
kept in DIR as mutantN.cnn to reproduce it with `cnnc check`.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(os.path.join(ROOT, "examples", f)
                  for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".cnn"))
SEED = 20240601
COUNT = 500
PER_MUTANT_S = 10.0  # a hang guard: a mutant checks in milliseconds, on a loaded machine too
MEMORY_LIMIT = 3 << 30  # address space of the fuzzing child

TOKEN = re.compile(r"#[^\n]*|[A-Za-z_]\w*|\d+(?:x\d+)+|\d+\.?\d*(?:[eE][-+]?\d+)?|->|//|\s+|.",
                   re.S)
HUGE = ["9" * 5000, "2147483648", "2147483647", "4294967296", "1e23", "1e400", "0", "-1",
        "46341*46341", "99999999999x3", "3x99999999999", "100000x100000x100000", "0." + "9" * 400,
        "0" * 3000 + "7", "65536*65536*65536"]
STAGES = ["relu", "identity", "conv(4, 1x1)", "maxpool(2)", "flatten", "dense(3)"]


class Mutator:
    """Seeded mutants of the example files, as bytes."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.sources = [open(p, encoding="utf-8").read() for p in EXAMPLES]
        self.vocabulary = sorted({t for s in self.sources for t in TOKEN.findall(s)
                                  if not t.isspace() and not t.startswith("#")})
        self.mutations = [self.swap, self.replace, self.delete, self.duplicate, self.huge_number,
                          self.nest_parentheses, self.nest_branches, self.long_expression,
                          self.odd_import]

    def mutant(self) -> bytes:
        tokens = TOKEN.findall(self.rng.choice(self.sources))
        for _ in range(self.rng.randint(1, 3)):
            tokens = self.rng.choice(self.mutations)(tokens)
        data = "".join(tokens).encode("utf-8")
        if self.rng.random() < 0.15:
            data = self.random_bytes(data)
        return data

    def _index(self, tokens, keep=lambda t: not t.isspace()) -> int:
        candidates = [i for i, t in enumerate(tokens) if keep(t)]
        return self.rng.choice(candidates) if candidates else 0

    def swap(self, tokens):
        i, j = self._index(tokens), self._index(tokens)
        tokens[i], tokens[j] = tokens[j], tokens[i]
        return tokens

    def replace(self, tokens):
        tokens[self._index(tokens)] = self.rng.choice(self.vocabulary)
        return tokens

    def delete(self, tokens):
        i = self._index(tokens)
        return tokens[:i] + tokens[i + self.rng.randint(1, 8):]

    def duplicate(self, tokens):
        i = self._index(tokens)
        span = tokens[i:i + self.rng.randint(1, 40)]
        j = self.rng.choice([i, self._index(tokens)])
        return tokens[:j] + span * self.rng.randint(1, 4) + tokens[j:]

    def huge_number(self, tokens):
        i = self._index(tokens, lambda t: t[:1].isdigit())
        tokens[i] = self.rng.choice(HUGE)
        return tokens

    def nest_parentheses(self, tokens):
        i = self._index(tokens, lambda t: t[:1].isdigit() or t.isidentifier())
        n = self.rng.choice([5, 99, 150, 3000])
        tokens[i] = "(" * n + tokens[i] + ")" * n
        return tokens

    def nest_branches(self, tokens):
        i = self._index(tokens, lambda t: t in ("relu", "tanh", "identity", "softmax"))
        n = self.rng.choice([3, 60, 120, 2000])
        kind = self.rng.choice(["concat", "add"])
        branch = " | ".join(self.rng.choice(STAGES) for _ in range(self.rng.randint(1, 3)))
        tokens[i] = f"{kind} {{ " * n + branch + " }" * n
        return tokens

    def long_expression(self, tokens):
        i = self._index(tokens, lambda t: t[:1].isdigit())
        n = self.rng.choice([10, 99, 101, 5000])
        op = self.rng.choice(["+1", "*1", "-0", "*2", "//1"])
        tokens[i] = self.rng.choice(["-" * n + tokens[i], tokens[i] + op * n])
        return tokens

    def odd_import(self, tokens):
        target = self.rng.choice(["/dev/zero", "missing.cnn", "mutant.cnn", "/etc/passwd",
                                  EXAMPLES[0], "."])
        return [f'import "{target}"\n', *tokens]

    def random_bytes(self, data: bytes) -> bytes:
        i = self.rng.randrange(len(data) + 1)
        special = [0, 0x1b, 0x7f, 0xff, 0xc3, 0x0b, 0x85]
        junk = bytes(self.rng.choice(special) if self.rng.random() < 0.5
                     else self.rng.randrange(256) for _ in range(self.rng.randint(1, 6)))
        return data[:i] + junk + data[i:]


class _HangError(Exception):
    pass


def _on_alarm(signum, frame):
    raise _HangError()


def check_mutants(seed: int, count: int, folder: str) -> dict:
    """Run `count` mutants through load_program + build_graph (what `cnnc check` does)."""
    from cnnc.diagnostics import format_error
    from cnnc.errors import CnncError
    from cnnc.graph import build_graph, load_program

    signal.signal(signal.SIGALRM, _on_alarm)
    mutator = Mutator(seed)
    outcomes = {"ok": 0, "error": 0}
    failures, slowest = [], 0.0
    start = time.perf_counter()
    for i in range(count):
        path = os.path.join(folder, f"mutant{i}.cnn")
        with open(path, "wb") as fh:
            fh.write(mutator.mutant())
        began = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, PER_MUTANT_S)
        try:
            try:
                build_graph(load_program(path))
                outcomes["ok"] += 1
            except CnncError as err:
                format_error(err)  # rendering is part of a clean error
                outcomes["error"] += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)  # before any handler below runs
        except _HangError:
            failures.append((path, f"hung for more than {PER_MUTANT_S} s"))
        except BaseException:  # noqa: BLE001 - anything else is the bug we look for
            failures.append((path, traceback.format_exc(limit=-4)))
        slowest = max(slowest, time.perf_counter() - began)
        if not any(f[0] == path for f in failures):
            os.unlink(path)
    return {"outcomes": outcomes, "failures": failures, "slowest": slowest,
            "total": time.perf_counter() - start}


def test_500_mutants_are_networks_or_clean_errors(tmp_path):
    result = subprocess.run([sys.executable, __file__, str(SEED), str(COUNT), str(tmp_path)],
                            capture_output=True, text=True, timeout=180, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    shown = "\n".join(f"{path}:\n{why}" for path, why in report["failures"][:5])
    assert not report["failures"], f"{len(report['failures'])} bad mutants, e.g.\n{shown}"
    assert sum(report["outcomes"].values()) == COUNT
    assert report["outcomes"]["ok"] >= 10  # the mutator does not only break files
    assert report["total"] < 60, report


def test_the_mutator_is_seeded():
    assert [Mutator(7).mutant() for _ in range(3)] == [Mutator(7).mutant() for _ in range(3)]


def test_cli_check_on_mutants_is_exit_0_or_a_clean_error(tmp_path):
    mutator = Mutator(SEED + 1)
    picks = [mutator.huge_number, mutator.nest_parentheses, mutator.nest_branches,
             mutator.long_expression, mutator.swap]
    for n, mutation in enumerate(picks):
        tokens = TOKEN.findall(mutator.sources[n % len(mutator.sources)])
        data = "".join(mutation(tokens)).encode("utf-8")
        if n == len(picks) - 1:
            data = mutator.random_bytes(data)
        path = tmp_path / f"mutant{n}.cnn"
        path.write_bytes(data)
        result = subprocess.run([sys.executable, "-m", "cnnc.cli", "check", str(path)],
                                capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PYTHONPATH": ROOT})
        assert result.returncode in (0, 1), result.stderr
        assert "Traceback" not in result.stderr
        if result.returncode == 1:
            first = result.stderr.splitlines()[0]
            assert result.stderr.startswith(f"{path}:") and "error: " in first
        else:
            assert "is well formed" in result.stdout


if __name__ == "__main__":  # the fuzzing child of test_500_mutants_are_networks_or_clean_errors
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    print(json.dumps(check_mutants(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
