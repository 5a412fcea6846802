{#- The xenha pillar: the cluster description (xenha/cluster.yaml) merged with the site's
    secrets (xenha/secrets.yaml, not in git; see secrets.yaml.example and docs/pillar.md).
    A pillar root listed before this one may shadow either file (the lab and the tests do).
    The formulas validate the result (xenha_pillar.validate); this file assembles it, gives
    each minion only the secrets of its role, and derives the heartbeat beacon's configuration
    for VM hosts.

    Who sees what (README "Security: who sees what"): a minion outside xenha:hosts gets no
    xenha key at all; the storage host gets the CHAP credentials but not the VM hosts' keys
    (heartbeat key, migration private key, xm's SSL key); VM hosts get all of those; no minion
    gets a BMC password: fencing runs on the master, which reads them from its own
    configuration (xenha_bmc). A BMC password found here is replaced by null, so the pillar
    check names it and says where it belongs, and the password itself never leaves. #}
{%- import_yaml "xenha/cluster.yaml" as cluster %}
{%- load_yaml as secrets %}
{%- include "xenha/secrets.yaml" ignore missing %}
{%- endload %}
{%- set xenha = salt["slsutil.merge"](cluster or {}, secrets or {}, strategy="recurse") %}
{%- set hosts = xenha.get("hosts") if xenha is mapping else none %}
{%- set me = hosts.get(opts.id) if hosts is mapping else none %}
{%- if me is mapping %}
{%-   for host in hosts.values() if host is mapping and host.get("bmc") is mapping %}
{%-     if "password" in host.bmc %}
{%-       do host.bmc.update({"password": none}) %}
{%-     endif %}
{%-   endfor %}
{%-   set withheld = [] %}
{%-   if me.get("role") != "vmhost" %}
{%-     do withheld.extend([["heartbeat", "key"], ["heartbeat", "previous_key"],
                           ["xen", "ssh", "private_key"],
                           ["xen", "relocation", "ssl_key"]]) %}
{%-   endif %}
{%-   if me.get("role") not in ("vmhost", "storage") %}
{%-     do withheld.append(["storage", "chap", "secret"]) %}
{%-   endif %}
{%-   for path in withheld %}
{%-     set parent = namespace(node=xenha) %}
{%-     for key in path[:-1] %}
{%-       set parent.node = parent.node.get(key) if parent.node is mapping else none %}
{%-     endfor %}
{%-     if parent.node is mapping %}
{%-       do parent.node.pop(path[-1], none) %}
{%-     endif %}
{%-   endfor %}
xenha: {{ xenha | json }}
{#- a heartbeat needs someone to hear: only VM hosts with VM host peers get the beacon #}
{%-   if me.get("role") == "vmhost" %}
{%-     set heartbeat = xenha.get("heartbeat") or {} %}
{%-     set peers = {} %}
{%-     for id, host in hosts | dictsort %}
{%-       if id != opts.id and (host or {}).get("role") == "vmhost" %}
{%-         do peers.update({id: host.get("ip")}) %}
{%-       endif %}
{%-     endfor %}
{%-     set config = [{"bind": me.get("ip")}, {"peers": peers}] %}
{%-     set settings = {
          "key": heartbeat.get("key"),
          "previous_key": heartbeat.get("previous_key"),
          "port": heartbeat.get("port"),
          "send_interval": heartbeat.get("interval"),
          "dead_time": heartbeat.get("dead_time"),
          "cluster": (xenha.get("ocfs2") or {}).get("cluster"),
          "toolstack": (xenha.get("xen") or {}).get("toolstack"),
        } %}
{#-     unset settings (none, or an empty string as the validator reads it) take the beacon's
        defaults (the same as xenha_pillar.validate's) #}
{%-     for key, value in settings | dictsort if value is not none and value != "" %}
{%-       do config.append({key: value}) %}
{%-     endfor %}
{#-     guest monitoring: a VM host watches its domUs once any domU has a monitor #}
{%-     set domus = xenha.get("domus") if xenha.get("domus") is mapping else {} %}
{%-     set monitored = domus.values() | select("mapping") | selectattr("monitor", "defined")
                        | list %}
{%-     if peers or monitored %}
beacons:
{%-       if peers %}
  xenha_heartbeat: {{ config | json }}
{%-       endif %}
{%-       if monitored %}
  xenha_guests: [{"every": 5}]
{%-       endif %}
{%-     endif %}
{%-   endif %}
{%- endif %}
