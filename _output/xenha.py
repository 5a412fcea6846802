"""
The ``xenha`` outputter: the runner's answers for people.

``salt-run xenha.*`` without ``--out`` prints through this outputter (the runner names it in its
return); ``--out=json|yaml|...`` still gets the plain data. An error is one line; tables are
aligned and never cut (the reason, the longest cell, comes last); times are local clock times;
the one-line summary comes last, where the eye lands.

CLI Example:

.. code-block:: bash

    salt-run xenha.status
"""

import time

__virtualname__ = "xenha"

TIME_KEYS = ("started", "updated", "finished", "since", "planned", "fired", "as_of")
HIDDEN = ("retcode", "summary", "error")
VERBATIM = ("report",)  # lines a runner already laid out for people (failover_report)


def __virtual__():
    return __virtualname__


def when(epoch):
    """A local clock time for an epoch (today: time only; older: date and time)."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return str(epoch)
    stamp = time.localtime(epoch)
    if time.strftime("%Y-%m-%d", stamp) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", stamp)
    return time.strftime("%Y-%m-%d %H:%M:%S", stamp)


def cell(value, key=None):
    """One table cell or value: nested data flattened to one readable line."""
    if value is None:
        return "-"
    if key in TIME_KEYS:
        return when(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {cell(v, k)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def table(rows):
    """Aligned columns, in the order of the first row's keys; nothing is cut."""
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cells = [[cell(row.get(c), c) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [columns] + cells
    return [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]


def render(data):
    """The lines for one answer (a dict from the runner, or anything else as it is)."""
    if not isinstance(data, dict):
        return [cell(data)]
    if data.get("error"):
        return [f"ERROR: {data['error']}"]
    lines = []
    for key, value in data.items():
        if key in HIDDEN:
            continue
        if key in VERBATIM and isinstance(value, list):
            lines += [str(line) for line in value]
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines += [f"{key}:", *(f"  {line}" for line in table(value)), ""]
        elif isinstance(value, list):
            lines += [f"{key}:", *(f"  - {cell(v)}" for v in value)] if value else [f"{key}: -"]
        else:
            lines.append(f"{key}: {cell(value, key)}")
    if data.get("summary"):
        lines.append(data["summary"])
    return lines


def output(data, **kwargs):  # pylint: disable=unused-argument
    """
    Render a xenha runner answer for people.

    CLI Example:

    .. code-block:: bash

        salt-run xenha.status
    """
    return "\n".join(render(data)).rstrip()
