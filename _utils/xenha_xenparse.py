"""
Pure parsers for the Xen toolstack's output (``xl`` and the xend-era ``xm``) and for domain config
files: text in, data out.

Formats come from Xen's source (tools/xl/xl_info.c, tools/python/xen/xm/main.py, libxlu's config
grammar); see docs/xen.md. Rows are parsed from the right because a domain name longer than the
40-column field simply pushes the other columns along. Every parser either returns data or raises
:class:`XenParseError` saying what it could not read; callers add the command that produced it.
"""

import ast
import json
import re
import warnings

# Name suffixes xl gives a domain while it moves (tools/xl/xl_migrate.c, xl_vmcontrol.c);
# xend renamed the source copy with a prefix instead (XendCheckpoint.save).
XL_TRANSIENT_SUFFIXES = {"--migratedaway": "migratedaway", "--incoming": "incoming"}
XM_TRANSIENT_PREFIX = "migrating-"

# The six state letters, in column order (xl: "rbps" + shutdown reason + "d"; xm: "rbpscd").
_FLAG_NAMES = ("running", "blocked", "paused", "shutdown", None, "dying")
_FLAG_LETTERS = "rbps?d"
# Fifth column: xl prints the shutdown reason letter from "-rscwS"; xm prints 'c' for crashed.
_REASONS = {"r": "reboot", "s": "suspend", "c": "crash", "w": "watchdog", "S": "soft_reset"}
_STATE_RE = re.compile(r"[r-][b-][p-][s-][-rscwS?][d-]")
_INT_RE = re.compile(r"[0-9]{1,18}")
_TIME_RE = re.compile(r"-?[0-9]{1,18}\.[0-9]")
_INFO_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class XenParseError(ValueError):
    """Toolstack output that does not have the expected shape."""


def decode_state(state):
    """
    Decode a six-letter state string (``-b----``, ``--p---``, ``---sc-``) into
    ``{"flags": [...], "shutdown_reason": str or None}``. ``crashed`` is added to the flags for a
    crash reason so xl and xm rows read the same.
    """
    if not isinstance(state, str) or not _STATE_RE.fullmatch(state):
        raise XenParseError(f"invalid domain state {state!r}: expected six letters like '-b----'")
    flags = [
        name
        for name, letter, want in zip(_FLAG_NAMES, state, _FLAG_LETTERS, strict=True)
        if name and letter == want
    ]
    reason = _REASONS.get(state[4]) if state[4] != "?" else "unknown"
    if reason == "crash":
        flags.append("crashed")
    return {"flags": flags, "shutdown_reason": reason}


def transient(name, toolstack="xl"):
    """
    Return ``(kind, base_name)`` for a name the toolstack uses while a domain migrates
    (``web01--migratedaway`` → ``("migratedaway", "web01")``), else ``(None, name)``.
    """
    if toolstack == "xm":
        if name.startswith(XM_TRANSIENT_PREFIX) and len(name) > len(XM_TRANSIENT_PREFIX):
            return "migrating", name[len(XM_TRANSIENT_PREFIX) :]
        return None, name
    for suffix, kind in XL_TRANSIENT_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return kind, name[: -len(suffix)]
    return None, name


def _row(name, domid, *, mem, vcpus, state, cpu_time, toolstack):
    kind, base = transient(name, toolstack)
    row = {
        "name": name,
        "domid": domid,
        "memory_mib": mem,
        "vcpus": vcpus,
        "state": state,
        "cpu_time": cpu_time,
        "transient": kind,
        "base_name": base,
    }
    row.update(decode_state(state))
    return row


def _int(text, what, line):
    if not _INT_RE.fullmatch(text):
        raise XenParseError(f"bad {what} {text!r} in line {line!r}")
    return int(text)


def _tail(line, what):
    """Split the four right-hand columns (Mem VCPUs State Time) off a list row."""
    parts = line.rsplit(None, 4)
    if len(parts) != 5:
        raise XenParseError(f"truncated {what} row {line!r}")
    head, mem, vcpus, state, cpu_time = parts
    if not _TIME_RE.fullmatch(cpu_time):
        raise XenParseError(f"bad cpu time {cpu_time!r} in line {line!r}")
    if not _STATE_RE.fullmatch(state):
        raise XenParseError(f"bad state {state!r} in line {line!r}")
    return head, _int(mem, "memory", line), _int(vcpus, "vcpu count", line), state, float(cpu_time)


def _body(text, what):
    """Return the non-empty lines after the header, checking the header is there."""
    if not isinstance(text, str):
        raise XenParseError(f"{what} output must be text, got {type(text).__name__}")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise XenParseError(f"empty {what} output (not even the header)")
    header = lines[0].split()
    if header[:3] != ["Name", "ID", "Mem"]:
        raise XenParseError(f"{what} output does not start with its header: {lines[0]!r}")
    return lines[1:]


def parse_xl_list(text):
    """
    Parse ``xl list`` output (``%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f`` rows) into a list of
    row dicts: name, domid, memory_mib, vcpus, state, flags, shutdown_reason, cpu_time,
    transient (``migratedaway``/``incoming``/None) and base_name.
    """
    rows = []
    for line in _body(text, "xl list"):
        head, mem, vcpus, state, cpu_time = _tail(line, "xl list")
        name_domid = head.rsplit(None, 1)
        if len(name_domid) != 2:
            raise XenParseError(f"truncated xl list row {line!r}")
        name, domid = name_domid
        rows.append(
            _row(
                name,
                _int(domid, "domid", line),
                mem=mem,
                vcpus=vcpus,
                state=state,
                cpu_time=cpu_time,
                toolstack="xl",
            )
        )
    return rows


def parse_xm_list(text):
    """
    Parse ``xm list`` output (``%-40s %5s %5d %5d %10s %8.1f`` rows) like :func:`parse_xl_list`.
    xend also lists managed domains that are not running: their ID column is blank and their
    domid is None.
    """
    rows = []
    for line in _body(text, "xm list"):
        head, mem, vcpus, state, cpu_time = _tail(line, "xm list")
        # The name is padded to 40 columns and followed by " %5s": a domid ends at column 46 or
        # later, so a short name that merely ends in digits is not mistaken for one.
        match = re.fullmatch(r"(.*\S)\s+([0-9]{1,18})", head)
        if match and len(head) >= 46:
            name, domid = match.group(1), int(match.group(2))
        else:
            name, domid = head.strip(), None
        if not name:
            raise XenParseError(f"xm list row without a name: {line!r}")
        rows.append(
            _row(name, domid, mem=mem, vcpus=vcpus, state=state, cpu_time=cpu_time, toolstack="xm")
        )
    return rows


def split_dom0(rows):
    """Return ``{"dom0": row or None, "domus": {name: row}}`` from parsed list rows."""
    result = {"dom0": None, "domus": {}}
    for row in rows:
        if row["domid"] == 0:
            result["dom0"] = row
        else:
            result["domus"][row["name"]] = row
    return result


def parse_info(text):
    """
    Parse ``xl info`` / ``xm info`` (``key : value`` lines, keys padded to 23 columns) into a
    dict of strings. Other lines (the NUMA tables of ``xl info -n``) are skipped; the result
    must hold total_memory and free_memory.
    """
    if not isinstance(text, str):
        raise XenParseError(f"info output must be text, got {type(text).__name__}")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        # keys are printed "%-23s:", so the colon of a real field is at column 23 or later
        if sep and len(key) >= 23 and _INFO_KEY_RE.fullmatch(key.strip()):
            fields[key.strip()] = value.strip()
    for key in ("total_memory", "free_memory"):
        if key not in fields:
            raise XenParseError(f"info output has no {key} line")
        if not _INT_RE.fullmatch(fields[key]):
            raise XenParseError(f"info {key} is not a number of MiB: {fields[key]!r}")
    return fields


def summarize_info(fields):
    """The capacity figures xenha uses, from :func:`parse_info`'s dict."""

    def number(key):
        value = fields.get(key, "")
        return int(value) if _INT_RE.fullmatch(value) else None

    version = fields.get("xen_version")
    if version is None and "xen_major" in fields:
        version = (
            f"{fields['xen_major']}.{fields.get('xen_minor', '?')}{fields.get('xen_extra', '')}"
        )
    return {
        "host": fields.get("host"),
        "total_memory_mib": number("total_memory"),
        "free_memory_mib": number("free_memory"),
        "nr_cpus": number("nr_cpus"),
        "xen_version": version,
    }


def parse_xl_list_json(text):
    """
    Parse ``xl list -l`` JSON (an array of ``{"domid": N, "config": {...}}``) into
    ``{name: {"domid", "uuid", "type", "max_memkb", "target_memkb", "max_vcpus", "disks",
    "config"}}``; ``disks`` is :func:`disk_paths` of the config.
    """
    try:
        data = json.loads(text)
    except (TypeError, ValueError, RecursionError) as err:
        raise XenParseError(f"xl list -l output is not JSON: {err}") from err
    if not isinstance(data, list):
        raise XenParseError("xl list -l output is not a JSON array")
    result = {}
    for entry in data:
        config = entry.get("config") if isinstance(entry, dict) else None
        c_info = config.get("c_info") if isinstance(config, dict) else None
        name = c_info.get("name") if isinstance(c_info, dict) else None
        if not isinstance(name, str):
            raise XenParseError(f"xl list -l entry without config.c_info.name: {entry!r}"[:200])
        b_info = config.get("b_info")
        b_info = b_info if isinstance(b_info, dict) else {}
        result[name] = {
            "domid": entry.get("domid"),
            "uuid": c_info.get("uuid"),
            "type": c_info.get("type"),
            "max_memkb": b_info.get("max_memkb"),
            "target_memkb": b_info.get("target_memkb"),
            "max_vcpus": b_info.get("max_vcpus"),
            "disks": disk_paths(config),
            "config": config,
        }
    return result


def disk_paths(config):
    """
    The backing paths of a domain's disks from its libxl config (``xl list -l``): each
    ``disks[].pdev_path`` (a file, a block device, or a URL such as ``iscsi://...`` for QEMU's
    own initiator), in order. An empty CD-ROM drive has no path and is left out. A malformed
    ``disks`` value is an error: guessing "no disks" would let a local disk pass as none.
    """
    disks = config.get("disks") if isinstance(config, dict) else None
    if disks is None:
        return []
    if not isinstance(disks, list):
        raise XenParseError(f"xl list -l: disks is not a list: {disks!r}"[:200])
    paths = []
    for disk in disks:
        path = disk.get("pdev_path") if isinstance(disk, dict) else None
        if path is None or path == "":
            if isinstance(disk, dict) and disk.get("is_cdrom"):
                continue  # an empty CD-ROM drive
            raise XenParseError(f"xl list -l: disk without pdev_path: {disk!r}"[:200])
        if not isinstance(path, str):
            raise XenParseError(f"xl list -l: pdev_path is not text: {path!r}"[:200])
        paths.append(path)
    return paths


# --- domain config files -------------------------------------------------------------------------
# xl reads them with libxlu's grammar (tools/libs/util/libxlu_cfg_l.l and libxlu_cfg_y.y). A config
# that grammar refuses may be an xm config: Python that xm runs (tools/python/xen/xm/opts.py, load).

# libxlu's tokens, in its lexer's order. A comment is part of the newline that ends it, so xl
# refuses a comment on the last line without one; capitals and "\r" are no token either.
_XL_TOKEN_RE = re.compile(
    "|".join(
        [
            r"(?P<ident>[a-z][._0-9a-z]*)",
            r"(?P<number>[0-9][0-9a-fx]*)",
            r"(?P<space>[ \t]+)",
            r"(?P<op>\+=|[,\[\]=;])",
            r"(?P<newline>\n|#[^\n]*\n)",
            r"""(?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""",
        ]
    )
)
# xlu__cfgl_dequote's escapes. Its numeric ones are broken (\xHH always fails, \NNN is dropped),
# so they are refused rather than read differently from xl.
_XL_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "n": "\n"}
_XL_ESCAPES.update({"r": "\r", "t": "\t", "v": "\v"})
_XL_MAX_DEPTH = 100  # xl's bound is bison's stack (thousands); real configs nest 2 deep
# What strtol(text, &end, 0) reads in full, as xlu_cfg_get_long does: leading space, a sign, then
# hex (0x), octal (leading 0) or decimal digits. xm's int() takes decimal digits only.
_STRTOL_RE = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_PY_INT_RE = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+[ \t\n\v\f\r]*")
_LONG_MAX = 2**63 - 1


def _at(source, line, message):
    """``file:line: message`` as xl reports a config error; ``line N: message`` without a file."""
    if source is None:
        return f"line {line}: {message}" if line else message
    return f"{source}:{line}: {message}" if line else f"{source}: {message}"


def _lexical_error(text, pos):
    bad = re.match(r"[^ \t\n]*", text[pos:]).group()
    first = text[pos]
    if first in "'\"":
        hint = "a string must end on the line it starts"
    elif first == "#":
        hint = "a comment on the last line needs a newline after it"
    elif first == "\r":
        hint = "xl reads Unix line ends only"
    elif first in "+-.():":
        hint = "this looks like Python, which xl does not run"
    else:
        hint = "xl reads lower-case names, numbers, quoted strings and [lists]"
    return f"unexpected {bad[:40]!r}: {hint}"


class _XlReader:
    """
    libxlu's grammar by recursive descent: ``key = value`` or ``key += value`` settings ended by a
    newline or ``;``; a value is a quoted string, a number (kept as its text, as libxlu keeps it
    until a setting is read as a number) or a ``[list]`` of values, which may span lines and end
    with a comma. A later setting of a key replaces the earlier one.
    """

    def __init__(self, text, source):
        self.source = source
        self.tokens = list(self._tokens(text))
        self.pos = 0

    def _tokens(self, text):
        pos, line = 0, 1
        while pos < len(text):
            match = _XL_TOKEN_RE.match(text, pos)
            if not match:
                raise self.error(line, _lexical_error(text, pos))
            kind = match.group() if match.lastgroup == "op" else match.lastgroup
            if kind != "space":
                yield kind, match.group(), line
            if kind == "newline":
                line += 1
            pos = match.end()
        yield "end", "", line

    def error(self, line, message):
        return XenParseError(_at(self.source, line, message))

    def unexpected(self, token, wanted):
        kind, text, line = token
        found = {"end": "the end of the file", "newline": "the end of the line"}.get(kind)
        return self.error(line, f"expected {wanted}, found {found or repr(text)}")

    def peek(self):
        return self.tokens[self.pos][0]

    def take(self):
        self.pos += 1
        return self.tokens[self.pos - 1]

    def skip_newlines(self):
        while self.peek() == "newline":
            self.pos += 1

    def settings(self):
        """``(values, lines, added)``: key → value, key → line, keys last set with ``+=``."""
        values, lines, added = {}, {}, set()
        while (token := self.take())[0] != "end":
            kind, key, line = token
            if kind in ("newline", ";"):
                continue
            if kind != "ident":
                raise self.unexpected(token, "a setting name (lower case)")
            op = self.take()
            if op[0] not in ("=", "+="):
                raise self.unexpected(op, f"'=' after {key}")
            value = self.value(0)
            if op[0] == "+=":
                value = self.add(key, values.get(key), value, line)
                added.add(key)
            else:
                added.discard(key)
            values[key], lines[key] = value, line
            if self.peek() not in ("newline", ";", "end"):
                raise self.unexpected(self.tokens[self.pos], f"';' or a new line after {key}")
        return values, lines, added

    def value(self, depth):
        kind, text, line = token = self.take()
        if kind == "number":
            return text
        if kind == "string":
            return self.dequote(text, line)
        if kind != "[":
            raise self.unexpected(token, "a value: a quoted string, a number or a [list]")
        if depth == _XL_MAX_DEPTH:
            raise self.error(line, f"lists nested more than {_XL_MAX_DEPTH} deep")
        items = []
        self.skip_newlines()
        while self.peek() not in ("]", "end"):
            items.append(self.value(depth + 1))
            self.skip_newlines()
            if self.peek() != ",":
                break
            self.pos += 1
            self.skip_newlines()
        if self.peek() == "end":
            raise self.error(line, "the list that starts on this line is not closed")
        close = self.take()
        if close[0] != "]":
            raise self.unexpected(close, "',' or ']' in the list")
        return items

    def dequote(self, token, line):
        def escape(match):
            char = match.group(1)
            if char in _XL_ESCAPES:
                return _XL_ESCAPES[char]
            why = "xl does not read numeric escapes" if char in "x01234567" else "no xl escape"
            raise self.error(line, f"\\{char} in {token}: {why}")

        return re.sub(r"\\(.)", escape, token[1:-1], flags=re.DOTALL)

    def add(self, key, old, new, line):
        """``key += value`` appends to the string or list set before (xlu__cfg_concat_vals)."""
        if old is None:
            return new
        if isinstance(old, list) != isinstance(new, list):
            raise self.error(line, f'{key} +=: can\'t add [list] to "string" or vice versa')
        return old + new


def _python(text):
    """The text as a Python module (an xm config), or None when it is not Python."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Python 3.12 warns of "\d"; xm's Python 2 took it
        try:
            return ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


def _plain(node):
    """A value xm uses as data (opts.py keeps str, int, float and list values): no expression."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
        return isinstance(node, ast.Constant) and type(node.value) in (int, float)
    if isinstance(node, ast.List):
        return all(_plain(item) for item in node.elts)
    return isinstance(node, ast.Constant) and type(node.value) in (str, int, float)


def _xm_settings(tree, text, source):
    """``(values, lines)`` of an xm config made of ``key = value`` lines only; Python is refused."""
    values, lines = {}, {}
    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        if len(targets) != 1 or not isinstance(targets[0], ast.Name) or not _plain(stmt.value):
            code = (ast.get_source_segment(text, stmt) or "").partition("\n")[0]
            raise XenParseError(
                _at(source, stmt.lineno, f"{code[:60]!r}: xenha reads an xm config only as plain")
                + " data (key = a string, a number or a [list]) and does not run its Python"
            )
        values[targets[0].id] = ast.literal_eval(stmt.value)
        lines[targets[0].id] = stmt.lineno
    return values, lines


def _read_cfg(text, source):
    if not isinstance(text, str):
        raise XenParseError(_at(source, None, f"config must be text, got {type(text).__name__}"))
    try:
        return ("xl", *_XlReader(text, source).settings())
    except XenParseError:
        tree = _python(text)
        if tree is None:
            raise  # neither xl's syntax nor Python: xl's error says where
    return ("xm", *_xm_settings(tree, text, source), set())


def parse_cfg_settings(text, source=None):
    """
    Every setting of a domain config file, ``{key: value}``. An xl config (xl.cfg(5)) keeps each
    value as xl does: a string, a number as its text (``512``, ``0x200``) or a list of values. A
    config xl's grammar refuses is read as an xm config (Python) if it only assigns strings,
    numbers and lists; any other Python is refused. Errors name ``source`` (the file) and the line.
    """
    return _read_cfg(text, source)[1]


def parse_cfg(text, source=None):
    """
    Read the settings xenha needs from an xl/xm domain config file (:func:`parse_cfg_settings`):
    ``{"name", "memory_mib", "vcpus"}``. Numbers are read as xl reads them, quoted or bare, in
    decimal, octal (``0755``) or hex (``0x200``); memory defaults to 128 MiB, vcpus to 1 (and, as
    xl does, a count below 1 means 1). A config without a name is an error, as it is for xl.
    """
    dialect, values, lines, added = _read_cfg(text, source)

    def number(key, default):
        if key not in values:
            return default
        value = _whole_number(values[key], dialect)
        if key in added or value is None:
            why = "xl takes += for strings and lists only" if key in added else "not a number"
            raise XenParseError(_at(source, lines[key], f"{key} = {values[key]!r}: {why}"))
        return value

    if "name" not in values:
        raise XenParseError(_at(source, None, 'domain config has no name = "..." line'))
    name = values["name"]
    if not isinstance(name, str) or not name:
        raise XenParseError(_at(source, lines["name"], f"name = {name!r} is not a domain name"))
    memory = number("memory", 128)
    if memory < 1:
        raise XenParseError(_at(source, lines["memory"], f"memory = {memory} MiB is too little"))
    return {"name": name, "memory_mib": memory, "vcpus": max(number("vcpus", 1), 1)}


def _whole_number(value, dialect):
    """A setting as the toolstack reads a number (xl: strtol base 0, xm: int()), else None."""
    if isinstance(value, str):
        match = (_STRTOL_RE if dialect == "xl" else _PY_INT_RE).fullmatch(value)
        try:
            value = (_strtol(*match.groups()) if dialect == "xl" else int(value)) if match else None
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            value = None
    return value if type(value) is int and abs(value) <= _LONG_MAX else None


def _strtol(sign, digits):
    base = 16 if digits[:2] in ("0x", "0X") else 8 if digits[0] == "0" else 10
    value = int(digits, base)
    return -value if sign == "-" else value
