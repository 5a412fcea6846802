"""
The o2cb/ocfs2-tools output parsers, fed with output captured from ocfs2-tools 1.8.7 and
util-linux 2.38 on Debian 12 (cluster.conf in a temp dir, mkfs.ocfs2 on image files and loop
devices), plus layouts built from the tools' own printf formats where this kernel cannot produce
them (an online cluster, a mounted volume). Hypothesis feeds random and truncated output: the
parsers return data or raise ParseError, nothing else.
"""

import json
import string

import pytest
import xenha_o2cbparse as p
from hypothesis import given
from hypothesis import strategies as st

# captured: o2cb --config-file=... list-clusters / list-cluster C --oneline
LIST_CLUSTERS = "ocfs2\nlabclu\n"
LIST_CLUSTER_LOCAL = """\
node: 0 ServVirt1 192.168.25.10:7777 ocfs2
node: 1 ServVirt2 192.168.25.11:7777 ocfs2
cluster: 2 local ocfs2
"""
LIST_CLUSTER_GLOBAL = """\
heartbeat: 0123456789ABCDEF0123456789ABCDEF labclu
node: 3 v1 10.99.0.10:7778 labclu
cluster: 1 global labclu
"""
# captured: /etc/init.d/o2cb status without configfs (exit code 0)
INIT_OFFLINE = """\
Driver for "configfs": Not loaded
Driver for "ocfs2_dlmfs": Not loaded
Checking O2CB cluster "ocfs2": Offline
Debug file system at /sys/kernel/debug: not mounted
"""
# o2cb.init 1.8.7 online_status_o2cb()/show_timeouts_o2cb() layout for an online cluster
INIT_ONLINE = """\
Driver for "configfs": Loaded
Filesystem "configfs": Mounted
Stack glue driver: Loaded
Stack plugin "o2cb": Loaded
Driver for "ocfs2_dlmfs": Loaded
Filesystem "ocfs2_dlmfs": Mounted
Checking O2CB cluster "ocfs2": Online
  Heartbeat dead threshold: 31
  Network idle timeout: 30000
  Network keepalive delay: 2000
  Network reconnect delay: 2000
  Heartbeat mode: Local
Checking O2CB heartbeat: Active
Debug file system at /sys/kernel/debug: mounted
"""
# captured: mounted.ocfs2 -d / -f with home.img on a loop device
MOUNTED_D = """\
Device      Stack  Cluster  F  UUID                              Label
/dev/loop0  o2cb               A7485037D79840A198B34A5B1356DC3F  cluster_home
"""
MOUNTED_F = """\
Device      Stack  Cluster  F  Nodes
/dev/loop0  o2cb               Not mounted
"""
MOUNTED_EMPTY = "Device   Stack  Cluster  F  Nodes\n"
# captured: wipefs --no-act --json on an ext4 image with an OCFS2 superblock copied in
WIPEFS_TWO = """\
{
   "signatures": [
      {
         "device": "amb.img",
         "offset": "0x438",
         "type": "ext4",
         "uuid": "69e7792d-0f00-4467-9887-7984651c1a77",
         "label": "data"
      },{
         "device": "amb.img",
         "offset": "0x2000",
         "type": "ocfs2",
         "uuid": "a7485037-d798-40a1-98b3-4a5b1356dc3f",
         "label": "cluster_home"
      }
   ]
}
"""
WIPEFS_EMPTY = '{\n   "signatures": [\n\n   ]\n}\n'
# captured: tunefs.ocfs2 -Q TUNEFS_QUERY home.img
TUNEFS = """\
label=cluster_home
uuid=A7485037D79840A198B34A5B1356DC3F
slots=2
cluster_size=32768
compat=backup-super strict-journal-super
incompat=None
ro_compat=None
"""


def mounted_table(rows, full):
    """Lay rows out with mounted.c's printf formats (column widths from the longest value)."""
    dev_width = max([7, *(len(r[0]) for r in rows)])
    cluster_width = max([7, *(len(r[2]) for r in rows)])
    last = "Nodes" if full else f"{'UUID':<32}  Label"
    lines = [f"{'Device':<{dev_width}}  {'Stack':<5}  {'Cluster':<{cluster_width}}  F  {last}"]
    for device, stack, cluster, flag, *rest in rows:
        tail = rest[0] if full else f"{rest[0]:<32}  {rest[1]}"
        lines.append(
            f"{device:<{dev_width}}  {stack:<5}  {cluster:<{cluster_width}}  {flag}  {tail}"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- samples


def test_clusters():
    assert p.parse_clusters(LIST_CLUSTERS) == ["ocfs2", "labclu"]
    assert p.parse_clusters("") == []


def test_clusters_rejects_garbage():
    with pytest.raises(p.ParseError, match="line 2"):
        p.parse_clusters("ocfs2\no2cb: something odd\n")


def test_oneline_local_cluster():
    data = p.parse_oneline(LIST_CLUSTER_LOCAL)
    assert data["clusters"] == {"ocfs2": {"node_count": 2, "heartbeat_mode": "local"}}
    assert data["nodes"]["ServVirt2"] == {
        "number": 1,
        "ip": "192.168.25.11",
        "port": 7777,
        "cluster": "ocfs2",
    }
    assert data["heartbeats"] == []


def test_oneline_global_cluster_with_heartbeat():
    data = p.parse_oneline(LIST_CLUSTER_GLOBAL)
    assert data["clusters"]["labclu"]["heartbeat_mode"] == "global"
    assert data["heartbeats"] == [
        {"region": "0123456789ABCDEF0123456789ABCDEF", "cluster": "labclu"}
    ]
    assert data["nodes"]["v1"]["port"] == 7778
    assert data["nodes"]["v1"]["number"] == 3


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("node: 0 a 10.0.0.1 c", "no ':port'"),
        ("node: 300 a 10.0.0.1:7777 c", "node number"),
        ("node: 0 a 10.0.0.999:7777 c", "IPv4"),
        ("node: 0 a 10.0.0.1:0 c", "node port"),
        ("node: 0 a 10.0.0.1:7777 c\nnode: 1 a 10.0.0.2:7777 c", "listed twice"),
        ("cluster: 2 sideways c", "heartbeat mode"),
        ("cluster: two local c", "node count"),
        ("node: 0 a 10.0.0.1:7777", "not a node:"),
        ("o2cb: Unknown cluster 'x'", "not a node:"),
    ],
)
def test_oneline_rejects(text, problem):
    with pytest.raises(p.ParseError, match=problem):
        p.parse_oneline(text)


def test_init_status_offline():
    status = p.parse_init_status(INIT_OFFLINE)
    assert status == {
        "cluster": "ocfs2",
        "online": False,
        "heartbeat_active": None,
        "heartbeat_mode": None,
        "timeouts": {},
        "drivers": {"configfs": False, "ocfs2_dlmfs": False},
    }


def test_init_status_online():
    status = p.parse_init_status(INIT_ONLINE)
    assert status["online"] is True
    assert status["heartbeat_active"] is True
    assert status["heartbeat_mode"] == "local"
    assert status["timeouts"] == {
        "heartbeat_dead_threshold": 31,
        "idle_timeout_ms": 30000,
        "keepalive_delay_ms": 2000,
        "reconnect_delay_ms": 2000,
    }
    assert status["drivers"] == {"configfs": True, "ocfs2_dlmfs": True}


def test_init_status_heartbeat_not_active():
    text = INIT_ONLINE.replace("heartbeat: Active", "heartbeat: Not active")
    text = text.replace("Mode: Local", "Mode: Global").replace("mode: Local", "mode: Global")
    status = p.parse_init_status(text)
    assert status["heartbeat_active"] is False
    assert status["heartbeat_mode"] == "global"


def test_init_status_needs_cluster_line():
    with pytest.raises(p.ParseError, match="Checking O2CB cluster"):
        p.parse_init_status('Driver for "configfs": Not loaded\n')


def test_init_status_bad_timeout():
    with pytest.raises(p.ParseError, match="Network idle timeout"):
        p.parse_init_status(INIT_ONLINE.replace("30000", "soon"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("offline\n", {"cluster": None, "online": False}),  # captured, no configfs
        ("online\n", {"cluster": None, "online": True}),
        ("Cluster 'ocfs2' is online\n", {"cluster": "ocfs2", "online": True}),
        ("Cluster 'ocfs2' is offline\n", {"cluster": "ocfs2", "online": False}),
    ],
)
def test_cluster_status(text, expected):
    assert p.parse_cluster_status(text) == expected


def test_cluster_status_without_answer():
    with pytest.raises(p.ParseError, match="online"):
        p.parse_cluster_status("o2cb: Unable to access cluster service\n")


def test_mounted_quick_detect():
    assert p.parse_mounted(MOUNTED_D) == {
        "/dev/loop0": {
            "stack": "o2cb",
            "cluster": None,
            "global_heartbeat": False,
            "uuid": "a7485037-d798-40a1-98b3-4a5b1356dc3f",
            "label": "cluster_home",
        }
    }


def test_mounted_full_detect_not_mounted():
    assert p.parse_mounted(MOUNTED_F)["/dev/loop0"] == {
        "stack": "o2cb",
        "cluster": None,
        "global_heartbeat": False,
        "mounted": False,
        "nodes": [],
    }
    assert p.parse_mounted(MOUNTED_EMPTY) == {}


def test_mounted_full_detect_nodes_and_wide_columns():
    device = "/dev/disk/by-path/ip-192.168.25.12:3260-iscsi-iqn.2009-06.br.example:storage-lun-1"
    text = mounted_table(
        [
            (device, "o2cb", "", "G", "ServVirt1, ServVirt2"),
            ("/dev/sdc", "pcmk", "longclustername", " ", "3"),
            ("/dev/sdd", "o2cb", "", " ", "Heartbeat device"),
            ("/dev/sde", "o2cb", "", " ", ""),
        ],
        full=True,
    )
    volumes = p.parse_mounted(text)
    assert volumes[device] == {
        "stack": "o2cb",
        "cluster": None,
        "global_heartbeat": True,
        "mounted": True,
        "nodes": ["ServVirt1", "ServVirt2"],
    }
    assert volumes["/dev/sdc"]["cluster"] == "longclustername"
    assert volumes["/dev/sdc"]["nodes"] == ["3"]
    assert volumes["/dev/sdd"]["heartbeat_device"] is True
    assert volumes["/dev/sde"] == {**volumes["/dev/sde"], "mounted": None, "nodes": None}


def test_mounted_label_with_spaces():
    uuid = "A7485037D79840A198B34A5B1356DC3F"
    text = mounted_table([("/dev/sdb", "o2cb", "", " ", uuid, "home of  vms")], full=False)
    assert p.parse_mounted(text)["/dev/sdb"]["label"] == "home of  vms"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mounted.ocfs2: something went wrong\n",
        "Device  Cluster  Stack  F  Nodes\n",
        MOUNTED_D.replace("/dev/loop0", "loop0"),
        MOUNTED_D.replace("A7485037", "NOTAUUID"),
    ],
)
def test_mounted_rejects(text):
    with pytest.raises(p.ParseError):
        p.parse_mounted(text)


def test_wipefs():
    assert p.parse_wipefs(WIPEFS_EMPTY) == []
    assert p.parse_wipefs(WIPEFS_TWO) == [
        {
            "type": "ext4",
            "offset": "0x438",
            "uuid": "69e7792d-0f00-4467-9887-7984651c1a77",
            "label": "data",
        },
        {
            "type": "ocfs2",
            "offset": "0x2000",
            "uuid": "a7485037-d798-40a1-98b3-4a5b1356dc3f",
            "label": "cluster_home",
        },
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not JSON"),
        ("[]", "signatures"),
        ('{"signatures": {}}', "signatures"),
        ('{"signatures": [{"offset": "0x0"}]}', "no type"),
        ('{"signatures": [7]}', "no type"),
    ],
)
def test_wipefs_rejects(text, problem):
    with pytest.raises(p.ParseError, match=problem):
        p.parse_wipefs(text)


def test_tunefs_query():
    assert p.parse_tunefs_query(TUNEFS) == {
        "label": "cluster_home",
        "uuid": "a7485037-d798-40a1-98b3-4a5b1356dc3f",
        "slots": 2,
        "cluster_size": 32768,
        "features": {
            "compat": ["backup-super", "strict-journal-super"],
            "incompat": [],
            "ro_compat": [],
        },
    }


def test_tunefs_query_missing_keys():
    with pytest.raises(p.ParseError, match="missing cluster_size, compat"):
        p.parse_tunefs_query("label=x\nuuid=A7485037D79840A198B34A5B1356DC3F\nslots=2\n")


def test_normalize_uuid():
    canonical = "a7485037-d798-40a1-98b3-4a5b1356dc3f"
    assert p.normalize_uuid("A7485037D79840A198B34A5B1356DC3F") == canonical
    assert p.normalize_uuid(canonical) == canonical
    with pytest.raises(p.ParseError):
        p.normalize_uuid("A7485037")


# ---------------------------------------------------------------- properties

PARSERS = [
    p.parse_clusters,
    p.parse_oneline,
    p.parse_init_status,
    p.parse_cluster_status,
    p.parse_mounted,
    p.parse_wipefs,
    p.parse_tunefs_query,
]
SAMPLES = {
    p.parse_clusters: LIST_CLUSTERS,
    p.parse_oneline: LIST_CLUSTER_GLOBAL,
    p.parse_init_status: INIT_ONLINE,
    p.parse_cluster_status: "Cluster 'ocfs2' is online\n",
    p.parse_mounted: MOUNTED_D,
    p.parse_wipefs: WIPEFS_TWO,
    p.parse_tunefs_query: TUNEFS,
}


def _data_or_parse_error(parser, text):
    try:
        return parser(text)
    except p.ParseError:
        return None


@pytest.mark.parametrize("parser", PARSERS, ids=lambda f: f.__name__)
@given(text=st.text())
def test_random_text_gives_data_or_parse_error(parser, text):
    _data_or_parse_error(parser, text)


@pytest.mark.parametrize("parser", PARSERS, ids=lambda f: f.__name__)
@given(data=st.data())
def test_truncated_or_mangled_samples_give_data_or_parse_error(parser, data):
    sample = SAMPLES[parser]
    cut = data.draw(st.integers(0, len(sample)))
    junk = data.draw(st.text(max_size=20))
    at = data.draw(st.integers(0, cut))
    _data_or_parse_error(parser, sample[:cut])
    _data_or_parse_error(parser, sample[:at] + junk + sample[at:cut])


_words = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=20)


@given(
    nodes=st.dictionaries(
        _words,
        st.tuples(st.integers(0, 254), st.ip_addresses(v=4), st.integers(1, 65535)),
        max_size=8,
    ),
    cluster=st.text(string.ascii_letters + string.digits, min_size=1, max_size=16),
    mode=st.sampled_from(["local", "global"]),
)
def test_oneline_round_trip(nodes, cluster, mode):
    lines = [f"node: {n} {name} {ip}:{port} {cluster}" for name, (n, ip, port) in nodes.items()]
    lines.append(f"cluster: {len(nodes)} {mode} {cluster}")
    data = p.parse_oneline("\n".join(lines))
    assert data["clusters"] == {cluster: {"node_count": len(nodes), "heartbeat_mode": mode}}
    assert {name: (n["number"], n["ip"], n["port"]) for name, n in data["nodes"].items()} == {
        name: (n, str(ip), port) for name, (n, ip, port) in nodes.items()
    }


_devices = st.builds(lambda s: "/dev/" + s, _words)
_labels = st.text(string.ascii_letters + string.digits + " _-", max_size=30).map(str.strip)


@given(
    rows=st.dictionaries(
        _devices,
        st.tuples(
            st.sampled_from(["o2cb", "pcmk", "None"]),
            st.text(string.ascii_letters + string.digits, max_size=16),
            st.sampled_from([" ", "G"]),
            st.uuids(),
            _labels,
            st.lists(_words, max_size=4),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_mounted_round_trip(rows):
    quick = [(d, s, c, f, u.hex.upper(), label) for d, (s, c, f, u, label, _) in rows.items()]
    full = [(d, s, c, f, ", ".join(n) or "Not mounted") for d, (s, c, f, _, _, n) in rows.items()]
    detected = p.parse_mounted(mounted_table(quick, full=False))
    nodes = p.parse_mounted(mounted_table(full, full=True))
    for device, (stack, cluster, flag, uuid, label, names) in rows.items():
        assert detected[device]["uuid"] == str(uuid)
        assert detected[device]["label"] == label
        assert detected[device]["cluster"] == (cluster or None)
        assert nodes[device]["global_heartbeat"] == (flag == "G")
        assert nodes[device]["stack"] == stack
        assert nodes[device]["nodes"] == names
        assert nodes[device]["mounted"] == bool(names)


@given(
    signatures=st.lists(
        st.fixed_dictionaries(
            {"type": _words, "offset": st.just("0x438"), "uuid": st.uuids().map(str)}
        ),
        max_size=3,
    )
)
def test_wipefs_round_trip(signatures):
    text = json.dumps({"signatures": signatures})
    assert [s["type"] for s in p.parse_wipefs(text)] == [s["type"] for s in signatures]
