"""
Name validation shared by every xenha module, state, beacon and runner.

Names reach command lines (as single argv elements, never through a shell) and file paths, so
they are checked against strict patterns before anything runs: a bad name is refused with a
message that says which name and why.
"""

import re

from salt.exceptions import CommandExecutionError

# Patterns are matched with fullmatch (a trailing newline is not a name).
# Xen domain names: letters, digits and . _ - (no leading dot or dash); stricter than xl.
DOMAIN_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# Host names (RFC 1123 labels, dotted) and Salt minion ids used as hosts.
HOST_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# OCFS2 cluster names: at most 16 characters from [0-9A-Za-z] (ocfs2-tools o2cb_config.c).
OCFS2_CLUSTER_RE = re.compile(r"[0-9A-Za-z]{1,16}")

_KINDS = {
    "domain": (DOMAIN_RE, "letters, digits, '.', '_', '-' (at most 64, no leading '.' or '-')"),
    "host": (HOST_RE, "an RFC 1123 host name (letters, digits, '-', dots between labels)"),
    "cluster": (OCFS2_CLUSTER_RE, "1 to 16 letters or digits"),
}
# Names Xen gives its own domains (tools/helpers/xen-init-dom0.c, init-xenstore-domain.c) and
# the names xl gives a domU's other halves: the device-model stub domain (libxl__stub_dm_name)
# and the two ends of a migration (tools/xl/xl_migrate.c, xl_vmcontrol.c). A domU named so
# would be mistaken for one of them.
RESERVED_DOMAINS = ("domain-0", "xenstore")
RESERVED_SUFFIXES = ("-dm", "--incoming", "--migratedaway")


def _domu_problem(name):
    if name.isdigit():
        return "all digits (xl reads it as a domain id)"
    if name.lower() in RESERVED_DOMAINS:
        return "reserved by Xen (Domain-0, Xenstore)"
    suffix = next((s for s in RESERVED_SUFFIXES if name.lower().endswith(s)), None)
    if suffix:
        return f"ends in {suffix!r}, which xl reserves for a domain's stub or migration copy"
    return None


def check(kind, name):
    """
    Return ``name`` if it is a valid ``kind`` name, else raise CommandExecutionError naming the
    value and the rule it breaks. Kinds: 'domain' (any Xen domain, Domain-0 included), 'domu'
    (a domain xenha may manage: no reserved or all-digit name), 'host' and 'cluster'.
    """
    label = "domain" if kind == "domu" else kind
    pattern, rule = _KINDS[label]
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise CommandExecutionError(f"invalid {label} name {name!r}: must be {rule}")
    problem = _domu_problem(name) if kind == "domu" else None
    if problem:
        raise CommandExecutionError(f"invalid domain name {name!r}: not a domU name, {problem}")
    return name
