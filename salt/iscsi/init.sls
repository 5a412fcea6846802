{#- The iSCSI side this host has in the cluster: target on the storage host, initiator on the
    VM hosts (top.sls targets the parts directly; this is for `state.apply iscsi`). #}
{%- from "xenha/map.jinja" import me with context %}

include:
  - iscsi.{{ "target" if me.role == "storage" else "initiator" }}
