"""Front end: .cnn text -> AST of small frozen dataclasses, every node with a Pos.

The grammar lives in grammar/cnnc.lark. Lark's LALR parser with its basic
lexer is linear in the input, so no text can make it hang; `Separators`
(a post-lexer) decides which newlines end a statement.
"""

from __future__ import annotations

import difflib
import importlib.resources
import threading
from dataclasses import dataclass
from functools import lru_cache

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import CnncSyntaxError, CnncValueError


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
    left: "Expr"
    right: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    pos: Pos


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
    """`concat { A | B }` or `add { A | B }`."""

    kind: str  # "concat" or "add"
    branches: tuple[tuple["Stage", ...], ...]
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
        depth = 0
        prev = None  # type of the last token passed on
        pending = None  # first separator token of the current run
        has_semicolon = False
        for tok in stream:
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
                    keep = prev is not None and prev not in self._JOIN_AFTER and tok.type not in self._JOIN_BEFORE
                if keep:
                    yield Token.new_borrow_pos("_SEP", pending.value, pending)
                pending, has_semicolon = None, False
            if tok.type == "_LPAR":
                depth += 1
            elif tok.type == "_RPAR":
                depth = max(depth - 1, 0)
            prev = tok.type
            yield tok
        # trailing separators are dropped


_PARSE_LOCK = threading.Lock()  # the parser's callbacks hold the file being parsed


@lru_cache(maxsize=1)
def _parser() -> Lark:
    text = importlib.resources.files("cnnc.grammar").joinpath("cnnc.lark").read_text(encoding="utf-8")
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
}


class _ToAst(Transformer):
    """Parse-tree callbacks, run by the LALR parser as it reduces (no tree is built).

    Positions come from tokens: keywords are named terminals so that `concat`,
    `block` and friends keep theirs.
    """

    def __init__(self):
        super().__init__()
        self.file = "<source>"

    def _pos(self, token: Token) -> Pos:
        return Pos(self.file, token.line, token.column)

    # expressions
    def int(self, children):
        return Num(int(children[0]), self._pos(children[0]))

    def decimal(self, children):
        return Num(float(children[0]), self._pos(children[0]))

    def dim(self, children):
        return Dim(tuple(int(v) for v in str(children[0]).split("x")), self._pos(children[0]))

    def name(self, children):
        return Name(str(children[0]), self._pos(children[0]))

    def neg(self, children):
        return Neg(children[1], self._pos(children[0]))

    def _binop(op):  # noqa: N805 - a factory used in the class body
        def method(self, children):
            return BinOp(op, children[0], children[-1], children[0].pos)
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

    concat, add = _branching("concat"), _branching("add")

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
        shape = tuple(int(v) for v in str(dims).split("x"))
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


def _syntax_error(err: UnexpectedInput, text: str, file: str) -> CnncSyntaxError:
    lines = text.splitlines()
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
            msg = f"unexpected {tok.value!r}"
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
    parser = _parser()
    with _PARSE_LOCK:
        parser.options.transformer.file = file
        try:
            return parser.parse(text)
        except UnexpectedInput as err:
            raise _syntax_error(err, text, file) from None


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
