"""
The toolstack output parsers (_utils/xenha_xenparse.py) on samples in Xen's exact formats, and
property-based: random, truncated and generated output either parses or raises XenParseError.
"""

import json
import string

import pytest
import xenha_xenparse as xp
from hypothesis import given, settings
from hypothesis import strategies as st

# `xl list` (tools/xl/xl_info.c): header with TABs, rows "%-40s %5d %5lu %5d     %c..%c  %8.1f"
XL_HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"
XL_ROW = "%-40s %5d %5lu %5d     %s  %8.1f"
# `xm list` (tools/python/xen/xm/main.py, xm_brief_list)
XM_HEADER = "%-40s %5s %5s %5s %10s %9s" % ("Name", "ID", "Mem", "VCPUs", "State", "Time(s)")  # noqa: UP031
XM_ROW = "%-40s %5s %5d %5d %10s %8.1f"

LONG = "a-domain-name-that-is-longer-than-forty-columns-01"
XL_SAMPLE = "\n".join(
    [
        XL_HEADER,
        XL_ROW % ("Domain-0", 0, 1024, 2, "r-----", 5123.4),
        XL_ROW % ("web01", 3, 512, 1, "-b----", 12.4),
        XL_ROW % (LONG, 4, 256, 2, "--p---", 0.0),
        XL_ROW % ("db01", 5, 1024, 2, "---sc-", 1.5),
        XL_ROW % ("old01", 6, 0, 0, "-----d", 99.0),
        XL_ROW % ("mail01--migratedaway", 7, 256, 1, "---ss-", 3.0),
        XL_ROW % ("dns01--incoming", 8, 128, 1, "--p---", 0.0),
        XL_ROW % ("cache01", 9, 64, 1, "r-----", 123456.7),
    ]
)
XM_SAMPLE = "\n".join(
    [
        XM_HEADER,
        XM_ROW % ("Domain-0", 0, 1024, 2, "r-----", 5123.4),
        XM_ROW % ("web01", 3, 512, 1, "-b----", 12.4),
        XM_ROW % (LONG, 4, 256, 2, "--p---", 0.0),
        XM_ROW % ("db01", 5, 1024, 2, "----c-", 1.5),
        XM_ROW % ("stopped 7", "", 256, 1, "------", 0.0),  # xend-managed, not running
        XM_ROW % ("migrating-mail01", 7, 256, 1, "-b----", 3.0),
    ]
)
XL_INFO = """host                   : ServVirt1
release                : 6.1.0-13-amd64
version                : #1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)
machine                : x86_64
nr_cpus                : 4
max_cpu_id             : 3
nr_nodes               : 1
cores_per_socket       : 4
threads_per_core       : 1
cpu_mhz                : 2394.454
hw_caps                : bfebfbff:77fafbff:2c100800:00000121:0000000f:009c6fbf:00000000:00000100
virt_caps              : hvm hvm_directio
total_memory           : 8095
free_memory            : 6012
sharing_freed_memory   : 0
sharing_used_memory    : 0
outstanding_claims     : 0
free_cpus              : 0
xen_major              : 4
xen_minor              : 17
xen_extra              : .3-pre
xen_version            : 4.17.3-pre
xen_caps               : xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64
xen_scheduler          : credit2
xen_pagesize           : 4096
platform_params        : virt_start=0xffff800000000000
xen_changeset          :
xen_commandline        : placeholder dom0_mem=1024M,max:1024M console=com1 loglvl=all
cc_compiler            : x86_64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0
cc_compile_by          : pkg-xen-devel
cc_compile_domain      : lists.alioth.debian.org
cc_compile_date        : Fri Sep 29 00:00:00 UTC 2023
build_id               : 8e0f1e4ac01a0d3cb3b8a1fbfb3a6f1fbaa6a9a0
xend_config_format     : 4
"""
XL_INFO_NUMA = XL_INFO.replace(
    "xen_major",
    "cpu_topology           :\ncpu:    core    socket     node\n  0:       0        0        0\n"
    "numa_info              :\nnode:    memsize    memfree    distances\n"
    "   0:       8192       6012      10\nxen_major",
)
# `xm info` prints "%-23s:" % key, value (Xen 3.3, the thesis's hosts): no xen_version key
XM_INFO = "\n".join(
    "%-23s: %s" % kv  # noqa: UP031
    for kv in [
        ("host", "ServVirt2"),
        ("release", "2.6.26-2-xen-686"),
        ("nr_cpus", "1"),
        ("total_memory", "2047"),
        ("free_memory", "1011"),
        ("node_to_cpu", "node0:0"),
        ("xen_major", "3"),
        ("xen_minor", "3"),
        ("xen_extra", ".1"),
        ("xend_config_format", "4"),
    ]
)
XL_LIST_L = json.dumps(
    [
        {
            "domid": 3,
            "config": {
                "c_info": {
                    "type": "pvh",
                    "name": "web01",
                    "uuid": "6c5a2f5e-0000-4a0b-9c7d-1b2c3d4e5f60",
                },
                "b_info": {"max_vcpus": 2, "max_memkb": 524288, "target_memkb": 524288},
                "disks": [{"pdev_path": "/dev/xenha/web01", "vdev": "xvda"}],
                "nics": [{"mac": "00:16:3e:00:00:01", "bridge": "br0"}],
                "on_crash": "destroy",
            },
        }
    ],
    indent=4,
)


def test_xl_list_rows_dom0_long_names_and_flags():
    result = xp.split_dom0(xp.parse_xl_list(XL_SAMPLE))
    assert result["dom0"]["name"] == "Domain-0"
    assert result["dom0"]["flags"] == ["running"]
    domus = result["domus"]
    assert "Domain-0" not in domus
    assert domus["web01"] == {
        "name": "web01",
        "domid": 3,
        "memory_mib": 512,
        "vcpus": 1,
        "state": "-b----",
        "cpu_time": 12.4,
        "transient": None,
        "base_name": "web01",
        "flags": ["blocked"],
        "shutdown_reason": None,
    }
    assert domus[LONG]["domid"] == 4 and domus[LONG]["flags"] == ["paused"]
    assert domus["db01"]["flags"] == ["shutdown", "crashed"]
    assert domus["db01"]["shutdown_reason"] == "crash"
    assert domus["old01"]["flags"] == ["dying"]
    assert domus["cache01"]["cpu_time"] == 123456.7


def test_xl_list_flags_transient_rows_instead_of_hiding_them():
    domus = xp.split_dom0(xp.parse_xl_list(XL_SAMPLE))["domus"]
    away, incoming = domus["mail01--migratedaway"], domus["dns01--incoming"]
    assert (away["transient"], away["base_name"]) == ("migratedaway", "mail01")
    assert away["flags"] == ["shutdown"] and away["shutdown_reason"] == "suspend"
    assert (incoming["transient"], incoming["base_name"]) == ("incoming", "dns01")


def test_empty_list_is_header_only():
    assert xp.parse_xl_list(XL_HEADER + "\n") == []
    assert xp.parse_xm_list(XM_HEADER + "\n") == []
    assert xp.split_dom0([]) == {"dom0": None, "domus": {}}


def test_xm_list_blank_id_and_migrating_prefix():
    rows = {row["name"]: row for row in xp.parse_xm_list(XM_SAMPLE)}
    assert rows["Domain-0"]["domid"] == 0
    assert rows[LONG]["domid"] == 4
    assert rows["db01"]["flags"] == ["crashed"]
    # a managed domain that is not running: no domid, and its trailing digit is part of the name
    assert rows["stopped 7"]["domid"] is None
    assert rows["migrating-mail01"]["transient"] == "migrating"
    assert rows["migrating-mail01"]["base_name"] == "mail01"
    # xl's suffixes mean nothing to xm and vice versa
    assert xp.transient("web--incoming", "xm") == (None, "web--incoming")
    assert xp.transient("migrating-web", "xl") == (None, "migrating-web")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("xl: command not found", "header"),
        (XL_HEADER + "\nweb01                                        3   512", "truncated"),
        (XL_HEADER + "\nweb01     x   512     1     -b----      12.4", "domid"),
        (XL_HEADER + "\nweb01     3   512     1     -b-z--      12.4", "state"),
        (XL_HEADER + "\nweb01     3   512     1     -b----      12", "cpu time"),
    ],
)
def test_xl_list_errors_say_what_is_wrong(text, problem):
    with pytest.raises(xp.XenParseError, match=problem):
        xp.parse_xl_list(text)


def test_decode_state_reasons():
    assert xp.decode_state("---sr-") == {"flags": ["shutdown"], "shutdown_reason": "reboot"}
    assert xp.decode_state("---sw-")["shutdown_reason"] == "watchdog"
    assert xp.decode_state("---sS-")["shutdown_reason"] == "soft_reset"
    assert xp.decode_state("---s?-")["shutdown_reason"] == "unknown"
    assert xp.decode_state("r-----") == {"flags": ["running"], "shutdown_reason": None}
    with pytest.raises(xp.XenParseError, match="six letters"):
        xp.decode_state("rb")


def test_info_xl_xm_and_numa_tables():
    xl = xp.parse_info(XL_INFO)
    assert xl["xen_commandline"] == "placeholder dom0_mem=1024M,max:1024M console=com1 loglvl=all"
    assert xl["xen_changeset"] == ""
    assert xp.summarize_info(xl) == {
        "host": "ServVirt1",
        "total_memory_mib": 8095,
        "free_memory_mib": 6012,
        "nr_cpus": 4,
        "xen_version": "4.17.3-pre",
    }
    assert xp.parse_info(XL_INFO_NUMA) == xl | {"cpu_topology": "", "numa_info": ""}
    xm = xp.summarize_info(xp.parse_info(XM_INFO))
    assert xm == {
        "host": "ServVirt2",
        "total_memory_mib": 2047,
        "free_memory_mib": 1011,
        "nr_cpus": 1,
        "xen_version": "3.3.1",
    }


def test_info_without_memory_is_an_error():
    with pytest.raises(xp.XenParseError, match="total_memory"):
        xp.parse_info("host                   : x\n")
    with pytest.raises(xp.XenParseError, match="free_memory"):
        xp.parse_info("total_memory           : 10\nfree_memory            : lots\n")


def test_xl_list_long_json():
    parsed = xp.parse_xl_list_json(XL_LIST_L)
    assert parsed["web01"]["domid"] == 3
    assert parsed["web01"]["max_memkb"] == 524288
    assert parsed["web01"]["max_vcpus"] == 2
    assert parsed["web01"]["config"]["nics"][0]["bridge"] == "br0"
    assert parsed["web01"]["disks"] == ["/dev/xenha/web01"]
    assert xp.parse_xl_list_json("[]") == {}
    with pytest.raises(xp.XenParseError, match="not JSON"):
        xp.parse_xl_list_json(XL_LIST_L[:-3])
    with pytest.raises(xp.XenParseError, match="c_info.name"):
        xp.parse_xl_list_json('[{"domid": 1, "config": {}}]')
    with pytest.raises(xp.XenParseError, match="array"):
        xp.parse_xl_list_json('{"domid": 1}')


def test_disk_paths_from_libxl_disk_records():
    config = {
        "disks": [
            {"pdev_path": "/cluster/domus/web01.img", "vdev": "xvda", "backend": "qdisk"},
            # QEMU's own initiator: a URL, not a path on the host
            {"pdev_path": "iscsi://10.99.0.12:3261/iqn.2025-01.lab.xenha:domu.web01/1"},
            {"pdev_path": None, "vdev": "xvdc", "is_cdrom": 1, "removable": 1},  # empty CD-ROM
            {"pdev_path": "/srv/iso/install.iso", "vdev": "xvdd", "is_cdrom": 1},
        ]
    }
    assert xp.disk_paths(config) == [
        "/cluster/domus/web01.img",
        "iscsi://10.99.0.12:3261/iqn.2025-01.lab.xenha:domu.web01/1",
        "/srv/iso/install.iso",
    ]
    assert xp.disk_paths({"c_info": {"name": "x"}}) == []  # a domain without disks
    assert xp.disk_paths({"disks": []}) == []


@pytest.mark.parametrize(
    ("disks", "problem"),
    [
        ({"vdev": "xvda"}, "disks is not a list"),
        ([{"vdev": "xvda"}], "disk without pdev_path"),
        ([{"pdev_path": 7}], "pdev_path is not text"),
        ("xvda", "disks is not a list"),
    ],
)
def test_disk_paths_refuse_what_they_cannot_read(disks, problem):
    # "no disks" would let a local disk pass as shared: a malformed record is an error
    with pytest.raises(xp.XenParseError, match=problem):
        xp.disk_paths({"disks": disks})
    entry = {"domid": 1, "config": {"c_info": {"name": "web01"}, "disks": disks}}
    with pytest.raises(xp.XenParseError, match=problem):
        xp.parse_xl_list_json(json.dumps([entry]))


def test_parse_cfg():
    text = (
        '# web server\nname = "web01"  # the domU\nmemory = 512\nvcpus=2\n'
        "disk = [ 'phy:/dev/xenha/web01,xvda,w' ]\nkernel = '/boot/vmlinuz'\n"
    )
    assert xp.parse_cfg(text) == {"name": "web01", "memory_mib": 512, "vcpus": 2}
    assert xp.parse_cfg("name='x'\n") == {"name": "x", "memory_mib": 128, "vcpus": 1}
    with pytest.raises(xp.XenParseError, match="no name"):
        xp.parse_cfg("memory = 512\n")
    with pytest.raises(xp.XenParseError, match="line 2: memory = .lots.: not a number"):
        xp.parse_cfg('name = "x"\nmemory = "lots"\n')


# --- property-based ---

PARSERS = [
    xp.parse_xl_list,
    xp.parse_xm_list,
    xp.parse_info,
    xp.parse_xl_list_json,
    xp.parse_cfg,
    xp.parse_cfg_settings,
]


@settings(max_examples=300, deadline=None)
@given(parser=st.sampled_from(PARSERS), text=st.text())
def test_random_text_parses_or_raises_a_clear_error(parser, text):
    try:
        parser(text)
    except xp.XenParseError as err:
        assert str(err)


@settings(max_examples=300, deadline=None)
@given(
    pair=st.sampled_from(
        [
            (xp.parse_xl_list, XL_SAMPLE),
            (xp.parse_xm_list, XM_SAMPLE),
            (xp.parse_info, XL_INFO),
            (xp.parse_info, XM_INFO),
            (xp.parse_xl_list_json, XL_LIST_L),
        ]
    ),
    data=st.data(),
)
def test_truncated_output_parses_or_raises_a_clear_error(pair, data):
    parser, sample = pair
    cut = data.draw(st.integers(min_value=0, max_value=len(sample)))
    try:
        parser(sample[:cut])
    except xp.XenParseError as err:
        assert str(err)


NAME = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=70)
STATE = st.tuples(*(st.sampled_from(["-", c]) for c in "rbps")).map("".join)
FIELDS = ("name", "domid", "memory_mib", "vcpus", "state", "cpu_time")
ROW = st.fixed_dictionaries(
    {
        "name": NAME.filter(lambda n: n != "Domain-0"),
        "domid": st.integers(1, 32767),
        "memory_mib": st.integers(0, 10**6),
        "vcpus": st.integers(0, 512),
        "state": st.tuples(STATE, st.sampled_from("-rscwS"), st.sampled_from("-d")).map("".join),
        "cpu_time": st.integers(0, 10**8).map(lambda t: t / 10),
    }
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(ROW, max_size=8, unique_by=lambda r: r["name"]))
def test_formatted_rows_round_trip(rows):
    """What Xen prints for any domain list parses back to the same values, xl and xm alike."""
    values = [tuple(r[k] for k in FIELDS) for r in rows]
    xl = "\n".join([XL_HEADER] + [XL_ROW % v for v in values])
    xm = "\n".join([XM_HEADER] + [XM_ROW % v for v in values])
    for parsed in (xp.parse_xl_list(xl), xp.parse_xm_list(xm)):
        assert [tuple(p[k] for k in FIELDS) for p in parsed] == values
