{#- The xenha pillar: the cluster description (xenha/cluster.yaml) merged with the site's
    secrets (xenha/secrets.yaml, not in git; see secrets.yaml.example and docs/pillar.md).
    A pillar root listed before this one may shadow either file (the lab and the tests do).
    The formulas validate the result (xenha_pillar.validate); this file only assembles it and
    derives the heartbeat beacon's configuration for VM hosts. #}
{%- import_yaml "xenha/cluster.yaml" as cluster %}
{%- load_yaml as secrets %}
{%- include "xenha/secrets.yaml" ignore missing %}
{%- endload %}
{%- set xenha = salt["slsutil.merge"](cluster or {}, secrets or {}, strategy="recurse") %}
{%- set hosts = xenha.get("hosts") or {} %}
{%- set me = hosts.get(opts.id) or {} %}
xenha: {{ xenha | json }}
{#- a heartbeat needs someone to hear: only VM hosts with VM host peers get the beacon #}
{%- if me.get("role") == "vmhost" %}
{%-   set heartbeat = xenha.get("heartbeat") or {} %}
{%-   set peers = {} %}
{%-   for id, host in hosts | dictsort %}
{%-     if id != opts.id and (host or {}).get("role") == "vmhost" %}
{%-       do peers.update({id: host.get("ip")}) %}
{%-     endif %}
{%-   endfor %}
{%-   set config = [{"bind": me.get("ip")}, {"peers": peers}] %}
{%-   set settings = {
        "key": heartbeat.get("key"),
        "port": heartbeat.get("port"),
        "send_interval": heartbeat.get("interval"),
        "dead_time": heartbeat.get("dead_time"),
        "cluster": (xenha.get("ocfs2") or {}).get("cluster"),
        "toolstack": (xenha.get("xen") or {}).get("toolstack"),
      } %}
{#-   unset settings (none, or an empty string as the validator reads it) take the beacon's
      defaults (the same as xenha_pillar.validate's) #}
{%-   for key, value in settings | dictsort if value is not none and value != "" %}
{%-     do config.append({key: value}) %}
{%-   endfor %}
{%-   if peers %}
beacons:
  xenha_heartbeat: {{ config | json }}
{%-   endif %}
{%- endif %}
