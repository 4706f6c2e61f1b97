"""Front end: .cnn text -> AST of small frozen dataclasses, every node with a Pos.

The grammar lives in grammar/cnnc.lark. Lark's LALR parser with its basic
lexer is linear in the input, so no text can make it hang; `Separators`
(a post-lexer) decides which newlines end a statement.

Every input is bounded before it can cost time or memory (docs/DESIGN.md,
"Limits"): a source file is a regular file of at most MAX_SOURCE_BYTES of
UTF-8 text and MAX_TOKENS tokens, an integer is at most INT_LIMIT, and
parentheses, braces and operator chains nest at most MAX_NESTING deep, so the
recursive walks over the AST stay far below Python's recursion limit.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import os
import re
import stat
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import CnncError, CnncImportError, CnncSyntaxError, CnncValueError

INT_LIMIT = 2**31 - 1  # the largest integer a .cnn value may have (int32, as most runtimes)
MAX_SOURCE_BYTES = 16 * 2**20  # the largest .cnn file read (a big network is ~100 KiB)
MAX_NESTING = 100  # parentheses, braces and operator chains nested in one another
# Lark parses some 30,000-50,000 tokens a second here (2 busy cores), so at most a few
# seconds; GoogLeNet with its blocks has 356 tokens, a 10,000-line network 130,000
# (test_frontend). Comments and spaces are not counted.
MAX_TOKENS = 200_000


@dataclass(frozen=True)
class Pos:
    file: str
    line: int
    column: int


# ---------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Num:
    value: int | float
    pos: Pos


@dataclass(frozen=True)
class Dim:
    values: tuple[int, ...]
    pos: Pos


@dataclass(frozen=True)
class Name:
    id: str
    pos: Pos


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * //
    left: Expr
    right: Expr
    pos: Pos
    depth: int = 1  # operators on the longest path to a leaf, at most MAX_NESTING


@dataclass(frozen=True)
class Neg:
    operand: Expr
    pos: Pos
    depth: int = 1


Expr = Num | Dim | Name | BinOp | Neg


# ---------------------------------------------------------------- structure
@dataclass(frozen=True)
class Arg:
    key: str | None  # None for a positional argument
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class Call:
    """A layer or a block instance: `kind(args)`, maybe labelled."""

    kind: str
    args: tuple[Arg, ...]
    label: str | None
    pos: Pos


@dataclass(frozen=True)
class Branching:
    """`concat { A | B }`, `add { A | B }` or `mul { A | B }`."""

    kind: str  # "concat", "add" or "mul"
    branches: tuple[tuple[Stage, ...], ...]
    label: str | None
    pos: Pos


Stage = Call | Branching


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    pos: Pos


@dataclass(frozen=True)
class Block:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stage, ...]
    pos: Pos


@dataclass(frozen=True)
class Network:
    name: str
    input_shape: tuple[int, int, int]
    body: tuple[Stage, ...]
    pos: Pos


@dataclass(frozen=True)
class Import:
    path: str
    pos: Pos


@dataclass(frozen=True)
class Module:
    file: str
    imports: tuple[Import, ...]
    blocks: tuple[Block, ...]
    networks: tuple[Network, ...]


# ---------------------------------------------------------------- lexing
class Separators:
    """Post-lexer: turn NEWLINE and `;` tokens into statement separators.

    A newline separates statements except inside parentheses, right after
    `->`, `|` or `{`, right before `->`, `|` or `}`, and at the start or end
    of the file. A `;` always separates, except right before `}` or at the end.
    Runs of separators collapse into one _SEP token.
    """

    always_accept = ("NEWLINE", "SEMICOLON")
    _JOIN_AFTER = {"_ARROW", "_BAR", "_LBRACE"}
    _JOIN_BEFORE = {"_ARROW", "_BAR", "_RBRACE"}

    def process(self, stream):
        depth = 0  # open parentheses
        nesting = 0  # open parentheses and braces
        prev = None  # type of the last token passed on
        pending = None  # first separator token of the current run
        has_semicolon = False
        for count, tok in enumerate(stream, 1):
            if count > MAX_TOKENS:
                raise CnncSyntaxError(
                    f"more than {MAX_TOKENS:,} tokens, the limit for a .cnn file", None,
                    tok.line, tok.column)
            if tok.type == "NEWLINE" and depth > 0:
                continue  # inside parentheses a newline is white space (a `;` is not)
            if tok.type in ("NEWLINE", "SEMICOLON"):
                pending = pending or tok
                has_semicolon = has_semicolon or tok.type == "SEMICOLON"
                continue
            if pending is not None:
                if has_semicolon:
                    keep = tok.type != "_RBRACE"
                else:
                    keep = (prev is not None and prev not in self._JOIN_AFTER
                            and tok.type not in self._JOIN_BEFORE)
                if keep:
                    yield Token.new_borrow_pos("_SEP", pending.value, pending)
                pending, has_semicolon = None, False
            if tok.type == "_LPAR":
                depth += 1
            elif tok.type == "_RPAR":
                depth = max(depth - 1, 0)
            if tok.type in ("_LPAR", "_LBRACE"):
                nesting += 1
                if nesting > MAX_NESTING:
                    raise CnncSyntaxError(
                        f"nested more than {MAX_NESTING} levels deep (parentheses and braces)",
                        None, tok.line, tok.column)
            elif tok.type in ("_RPAR", "_RBRACE"):
                nesting = max(nesting - 1, 0)
            prev = tok.type
            yield tok
        # trailing separators are dropped


# The file being parsed, for the positions the parser's callbacks make. The one LALR parser
# (its tables are costly to build) is shared, and Lark binds its callbacks when it is built,
# so the file cannot be an attribute of the callbacks' object; a context variable is set
# per `parse` call, so parses in other threads (each thread has its own context) and
# nested ones never see each other's file and none waits for another.
_FILE: ContextVar[str] = ContextVar("cnnc_parse_file", default="<source>")


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = importlib.resources.files("cnnc.grammar").joinpath("cnnc.lark")
    text = grammar.read_text(encoding="utf-8")
    return Lark(text, parser="lalr", lexer="basic", postlex=Separators(),
                maybe_placeholders=True, transformer=_ToAst())


# ---------------------------------------------------------------- parse tree -> AST
_TOKEN_NAMES = {
    "_ARROW": "'->'", "_BAR": "'|'", "_LBRACE": "'{'", "_RBRACE": "'}'", "_LPAR": "'('",
    "_RPAR": "')'", "_COMMA": "','", "_SEP": "end of statement", "NAME": "a name",
    "INT": "an integer", "DECIMAL": "a decimal", "DIM": "a dimension like 3x3",
    "STRING": "a quoted path", "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'",
    "STAR": "'*'", "__ANON_0": "'//'", "$END": "end of file", "NETWORK": "'network'",
    "BLOCK": "'block'", "IMPORT": "'import'", "CONCAT": "'concat'", "ADD": "'add'",
    "MUL": "'mul'",
}


class _ToAst(Transformer):
    """Parse-tree callbacks, run by the LALR parser as it reduces (no tree is built).

    Positions come from tokens: keywords are named terminals so that `concat`,
    `block` and friends keep theirs.
    """

    @property
    def file(self) -> str:
        return _FILE.get()

    def _pos(self, token: Token) -> Pos:
        return Pos(self.file, token.line, token.column)

    # expressions
    def _integer(self, digits: str, token: Token, offset: int = 0) -> int:
        """The value of a run of digits `offset` characters into `token`, at most INT_LIMIT.

        Checked on the text, so a 5000-digit literal never becomes a Python int.
        """
        significant = digits.lstrip("0") or "0"
        if len(significant) > len(str(INT_LIMIT)) or int(significant) > INT_LIMIT:
            raise CnncValueError(
                f"the integer {abbreviate(digits)} is larger than {INT_LIMIT}"
            ).at(Pos(self.file, token.line, token.column + offset))
        return int(significant)

    def _dimension(self, token: Token) -> tuple[int, ...]:
        values, offset = [], 0
        for digits in str(token).split("x"):
            values.append(self._integer(digits, token, offset))
            offset += len(digits) + 1
        return tuple(values)

    def int(self, children):
        return Num(self._integer(str(children[0]), children[0]), self._pos(children[0]))

    def decimal(self, children):
        value = float(children[0])
        if not math.isfinite(value):  # 1e400, or thousands of digits
            raise CnncValueError(
                f"the decimal {abbreviate(str(children[0]))} is out of range").at(
                self._pos(children[0]))
        return Num(value, self._pos(children[0]))

    def dim(self, children):
        return Dim(self._dimension(children[0]), self._pos(children[0]))

    def name(self, children):
        return Name(str(children[0]), self._pos(children[0]))

    @staticmethod
    def _depth(operands, pos: Pos) -> int:
        """Depth of an operator node; bounded so evaluation need not recurse far."""
        depth = 1 + max(getattr(e, "depth", 0) for e in operands)
        if depth > MAX_NESTING:
            raise CnncSyntaxError(
                f"expression too long or nested too deeply (more than {MAX_NESTING} operators "
                "in a row)").at(pos)
        return depth

    def neg(self, children):
        pos = self._pos(children[0])
        return Neg(children[1], pos, self._depth(children[1:], pos))

    def _binop(op):  # noqa: N805 - a factory used in the class body
        def method(self, children):
            left, right = children[0], children[-1]
            return BinOp(op, left, right, left.pos, self._depth((left, right), left.pos))
        return method

    plus, minus, times, floordiv = _binop("+"), _binop("-"), _binop("*"), _binop("//")

    # arguments and stages
    def kwarg(self, children):
        return Arg(str(children[0]), children[1], self._pos(children[0]))

    def posarg(self, children):
        return Arg(None, children[0], children[0].pos)

    def call(self, children):
        name, *args = children
        return Call(str(name), tuple(a for a in args if a is not None), None, self._pos(name))

    def _branching(kind):  # noqa: N805
        def method(self, children):
            keyword, *branches = children
            return Branching(kind, tuple(branches), None, self._pos(keyword))
        return method

    concat, add, mul = _branching("concat"), _branching("add"), _branching("mul")

    def labelled(self, children):
        label, stage = children
        pos = self._pos(label)
        if isinstance(stage, Call):
            return Call(stage.kind, stage.args, str(label), pos)
        return Branching(stage.kind, stage.branches, str(label), pos)

    def chain(self, children):
        return tuple(children)

    # top level
    def param(self, children):
        return Param(str(children[0]), children[1], self._pos(children[0]))

    def block_def(self, children):
        keyword, name, *params, body = children
        return Block(str(name), tuple(p for p in params if p is not None), body,
                     self._pos(keyword))

    def network_def(self, children):
        keyword, name, word, dims, body = children
        if str(word) != "input":
            raise CnncSyntaxError(f"expected 'input' before the input shape, got '{word}'").at(
                self._pos(word))
        shape = self._dimension(dims)
        if len(shape) != 3:
            raise CnncValueError(
                f"the input shape must be CxHxW (three sizes), got {dims}").at(self._pos(dims))
        if min(shape) < 1:
            raise CnncValueError(f"input sizes must be at least 1, got {dims}").at(self._pos(dims))
        return Network(str(name), shape, body, self._pos(keyword))

    def import_stmt(self, children):
        return Import(str(children[1])[1:-1], self._pos(children[0]))

    def start(self, children):
        return Module(
            self.file,
            tuple(c for c in children if isinstance(c, Import)),
            tuple(c for c in children if isinstance(c, Block)),
            tuple(c for c in children if isinstance(c, Network)),
        )


def _describe_expected(expected) -> str:
    names = sorted({_TOKEN_NAMES.get(e, repr(e.lower()) if e.isupper() else e) for e in expected})
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def source_lines(text: str) -> list[str]:
    """The lines as Lark counts them: only `\\n` ends one (`\\f` and a lone `\\r` do not)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _syntax_error(err: UnexpectedInput, text: str, file: str) -> CnncSyntaxError:
    lines = source_lines(text)
    if lines and lines[-1] == "":
        lines.pop()  # the text ends with a newline
    line, column = err.line, err.column
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        msg = f"unexpected character {char!r}"
    elif isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            msg = "unexpected end of file"
            line = len(lines) or 1
            column = len(lines[-1]) + 1 if lines else 1
        elif tok.type in ("_RBRACE", "_BAR") and "NAME" in err.expected:
            return CnncSyntaxError(
                "empty body or branch (write 'identity' to pass the input on)", file, line,
                column, lines[line - 1] if 0 < line <= len(lines) else None)
        elif tok.type == "_SEP":
            msg = "unexpected end of statement" if tok.value != ";" else "unexpected ';'"
        else:
            msg = f"unexpected {abbreviate(tok.value)!r}"
        msg += f"; expected {_describe_expected(err.expected)}"
    elif isinstance(err, UnexpectedEOF):
        msg = "unexpected end of file"
        line = len(lines) or 1
        column = len(lines[-1]) + 1 if lines else 1
    else:
        msg = "syntax error"
    if line is None or line < 1:
        line, column = 1, 1
    src = lines[line - 1] if 0 < line <= len(lines) else None
    return CnncSyntaxError(msg, file, line, column, src)


def parse(text: str, file: str = "<source>") -> Module:
    """Parse .cnn text into a Module. Raises CnncSyntaxError with a position."""
    check_text(text, file)
    parser = _parser()
    reset = _FILE.set(file)
    try:
        return parser.parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(err, text, file) from None
    except CnncError as err:  # from the post-lexer or a transformer callback
        if err.file is None:
            err.file = file
        if err.source_line is None and err.file == file and err.line is not None:
            lines = source_lines(text)
            err.source_line = lines[err.line - 1] if err.line <= len(lines) else None
        raise
    finally:
        _FILE.reset(reset)


# ---------------------------------------------------------------- reading sources
# C0 and C1 control characters other than tab, newline, carriage return and form feed:
# no .cnn text has them, and a terminal would obey them if they were echoed.
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")


def check_text(text: str, file: str):
    """Refuse text with control characters: it is not .cnn source, and is never quoted."""
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise CnncSyntaxError(
            f"not a .cnn text file (control character \\x{ord(bad.group()):02x} on line {line})",
            file=file)


def read_source(path: str) -> str:
    """The text of a .cnn file, for the main file and imports alike.

    Only a regular file is opened (stat first, then open non-blocking and check
    again, so a FIFO or a device never blocks or streams), of at most
    MAX_SOURCE_BYTES, and it must be UTF-8 (a BOM is dropped) without control
    characters; otherwise a CnncImportError says why without quoting the file.
    """
    def refuse(reason: str) -> CnncImportError:
        return CnncImportError(reason, file=path)

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise refuse("not a regular file")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise refuse("no such file") from None
    except OSError as err:
        raise refuse(f"cannot read it: {err.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):  # replaced between stat and open
            raise refuse("not a regular file")
        if info.st_size > MAX_SOURCE_BYTES:
            raise refuse(f"larger than {MAX_SOURCE_BYTES // 2**20} MiB, the limit for a .cnn file")
        try:
            data = fh.read(MAX_SOURCE_BYTES + 1)  # a file may grow after fstat
        except OSError as err:
            raise refuse(f"cannot read it: {err.strerror}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise refuse(f"larger than {MAX_SOURCE_BYTES // 2**20} MiB, the limit for a .cnn file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise refuse(f"not a .cnn text file: not UTF-8 text (invalid byte at offset {err.start})"
                     ) from None
    check_text(text, path)
    return text


def abbreviate(text: str, limit: int = 40) -> str:
    """`text` cut to about `limit` characters for a message, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-8:]} ({len(text)} characters)"


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    choices = list(choices)
    # A ratio of 0.6 needs lengths within a factor of 2.4; difflib would still index all
    # of a very long word before finding that out.
    if not choices or len(word) > 3 * max(map(len, choices)):
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
