"""
Waiting for a VM host's domUs to leave before it shuts down (``xenha_shutdown.drain``): which
of the cluster's domUs still run here, and a bounded wait until none does. Pure: the look at
the toolstack, the clock and the sleep are passed in.
"""


def staying(rows, managed):
    """
    The ``managed`` domUs among ``xenha_xen.list_domains`` rows, sorted: a migration's
    transient copy (``base_name``) counts as its domU, which has not left until it is gone.
    """
    names = {row.get("base_name") or row.get("name") or key for key, row in rows.items()}
    return sorted(names & set(managed))


def wait_gone(look, timeout, *, clock, sleep, interval=2.0):
    """
    Call ``look()`` (the names still here; it may raise) until it returns none or ``timeout``
    seconds have passed. Returns ``{"gone", "left", "waited", "errors"}``: ``left`` is the
    last answer (or None if the toolstack never answered), ``errors`` the failed looks (a
    toolstack busy with the migrations is looked at again, never taken for "all gone").
    """
    start = clock()
    left, errors, last_error = None, 0, None
    while True:
        try:
            left = look()
        except Exception as err:  # noqa: BLE001 - a failed look is data: count it, look again
            errors += 1
            last_error = str(err) or type(err).__name__
        else:
            if not left:
                return _result(True, [], clock() - start, errors, last_error)
        remaining = timeout - (clock() - start)
        if remaining <= 0:
            return _result(False, left, clock() - start, errors, last_error)
        sleep(min(interval, remaining))


def _result(gone, left, waited, errors, last_error):
    result = {"gone": gone, "left": left, "waited": round(waited, 1), "errors": errors}
    if last_error:
        result["last_error"] = last_error
    return result
