{#- The shared volume, mounted now and at boot. fstab carries the boot order declaratively:
    _netdev (wait for the network) plus systemd dependencies on the iSCSI login service and
    o2cb, which replaces the thesis's renaming of init scripts. #}
{%- from "xenha/map.jinja" import cluster, me with context %}
{%- from "ocfs2/map.jinja" import ocfs2 with context %}
{%- from "iscsi/map.jinja" import initiator with context %}
{%- if ocfs2.mount %}

{#-   what the mount waits for: whichever of these SLS have states on this host #}
{%-   set after = ["ocfs2.config"] %}
{%-   do after.append("ocfs2.service") if ocfs2.service_manager == "systemd" %}
{%-   do after.append("ocfs2.format") if me.id == cluster.ocfs2.format_host %}
{%-   do after.append(ocfs2.device_sls) if ocfs2.device_sls %}

include: {{ after | json }}

ocfs2-mount-mount-mounted:
  mount.mounted:
    - name: {{ cluster.ocfs2.mount_point }}
    - device: {{ cluster.ocfs2.device }}
    - fstype: ocfs2
    - opts:
      - _netdev
      - x-systemd.requires={{ initiator.login_service }}.service
      - x-systemd.requires={{ ocfs2.o2cb_service }}.service
    - extra_mount_invisible_keys: [x-systemd.requires]
    - mkmnt: true
    - persist: true
    - config: {{ ocfs2.fstab }}
    - require:
{%-   for sls in after %}
      - sls: {{ sls }}
{%-   endfor %}
{%- endif %}
